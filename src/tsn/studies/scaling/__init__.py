"""``tsn study``: how a TSN scales with the number of tasks, and with fewer labels, against its baselines.

Two studies on the embedded synthetic scenes (any dataset with a ``tsn_<family>`` recipe works the same way):

* :func:`run_tasks_study` trains the TSN, the shared-encoder multi-head network and one single-task network per
  task on the first ``T`` tasks of a fixed task order, for each ``T`` of :attr:`StudySettings.counts` (2, 4, 8, 12
  by default): nested task lists, so a single-task network is trained once per task and serves every ``T`` (its
  budget does not depend on ``T``). For each ``T`` it reports parameters, training time, all-task inference time,
  peak memory, every task's metric and the average drop against the single-task networks.
* :func:`run_labels_study` trains the TSN on the first ``count`` tasks while only a fraction of the training
  scenes is labelled for some of them (``TrainConfig.label_fractions``), and reports the average drop as that
  fraction falls.

**Budget.** Every run trains :attr:`StudySettings.steps` optimizer steps of :attr:`StudySettings.batch_size` scenes
with the all-tasks schedule (every step trains every task of the network on the same batch), so each task sees the
same number of labelled samples in every architecture, whatever ``T``; the multi-task networks' cost per step grows
with ``T`` (one decoder pass per task), as the cost of the set of single-task networks does. Every run validates
after each epoch and keeps its lowest validation loss; the single-task runs also score their metric there, and the
results check whether those curves have flattened (:func:`tsn.studies.seeds.convergence`).

**Seeds.** Every network is trained once per seed ``0 .. seeds-1`` (:mod:`tsn.studies.seeds`); every metric, drop
and average drop is reported as mean, sd and 95 % interval over the seeds, and the architectures are compared
paired on the seeds (:mod:`tsn.studies.statistics`).

**Reuse.** The runs are those of ``tsn reproduce`` (:mod:`tsn.studies.reproduce`: the same presets, the same
reuse of finished runs, resume of interrupted ones and refusal of a folder trained with another recipe), kept in
``<out>/runs/seed<k>/<key>``: ``single_task-<task>``, ``multi_head-T<T>``, ``tsn-T<T>`` and, for the labels study,
``tsn-T<T>-<task><fraction>...``. Both studies share them: the labels study's fully labelled TSN and its
single-task baselines are the tasks study's runs when both write to the same ``out``. Evaluations are cached next
to each run, measurements in ``<out>/measurements``; the results (``tasks.json`` / ``labels.json``, a markdown
table, figures) are written atomically at the end. Run the same command again after an interruption.

**Measurements.** Each measurement runs in a fresh process of one thread (forked from a server that has imported
torch), so that its peak memory is its own: the peak resident set (Linux ``VmHWM``, reset through
``/proc/self/clear_refs``; elsewhere ``ru_maxrss``) minus the resident set before the model is built. It includes
the weights (and for training the gradients and Adam's state) and everything the step allocates. All-task
inference: every task of a batch of images (float32, eager, no gradient; a TSN runs :meth:`predict_tasks`: the
encoder once, the task passes batched; the single-task networks run one after another, all held in memory), the
median and range of a few repeats. Training: one optimizer step on a batch of real training scenes with the run's
precision, median and range of a few steps; the single-task networks train one at a time, so their peak is the
largest network's. Training time is also reported as the runs took it (wall seconds of each run, several runs side
by side).
"""


from tsn.studies.scaling.report import labels_markdown, tasks_markdown
from tsn.studies.scaling.run import run_labels_study, run_tasks_study
from tsn.studies.scaling.settings import (
    ARCHITECTURES,
    DEFAULT_COUNTS,
    DEFAULT_FRACTIONS,
    STUDY_FORMAT,
    StudySettings,
    default_counts,
    plan_labels_study,
    plan_tasks_study,
)

__all__ = [
    "STUDY_FORMAT",
    "DEFAULT_COUNTS",
    "DEFAULT_FRACTIONS",
    "ARCHITECTURES",
    "StudySettings",
    "default_counts",
    "plan_tasks_study",
    "plan_labels_study",
    "run_tasks_study",
    "run_labels_study",
    "tasks_markdown",
    "labels_markdown",
]
