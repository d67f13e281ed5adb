"""``tsn study tasks`` / ``tsn study labels``: the task-scaling and partially-labelled studies."""

from __future__ import annotations

import argparse
from pathlib import Path

from tsn.utils.checks import escaped

__all__ = ["HELP", "DESCRIPTION", "add_arguments", "run"]

HELP = "studies: how TSN, multi-head and single-task networks scale with the task count, and with fewer labels"
DESCRIPTION = (
    "tasks: TSN, multi-head and single-task networks trained on the same per-task budget on the first T tasks of a "
    "fixed order (T = 2, 4, 8, 12), with parameters, training and all-task inference time, peak memory, every metric "
    "and the average drop. labels: the average drop of a TSN as the labelled fraction of some tasks falls. Every "
    "network is trained once per seed; every value is reported as mean +- 95 % interval over the seeds, with paired "
    "comparisons and the validation curves behind the budget. Both write a JSON, a markdown table and figures into "
    "OUT, reuse finished runs and seeds and resume interrupted ones (run the same command again); they share their "
    "runs when they share OUT. See docs/studies.md."
)


def _tasks(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _numbers(kind: type, text: str) -> tuple:
    try:
        return tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}") from None


def _ints(text: str) -> tuple:
    return _numbers(int, text)


def _floats(text: str) -> tuple:
    return _numbers(float, text)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("study"), metavar="DIR",
                        help="folder of the runs and results, shared by both studies (default: study)")
    parser.add_argument("--dataset", default="synthetic_full", metavar="NAME",
                        help="dataset (default: synthetic_full, the 13-task synthetic scenes)")
    parser.add_argument("--family", default="", metavar="FAMILY",
                        help="recipe family of the runs (default: the dataset's, r10t_synthetic for the scenes)")
    parser.add_argument("--tasks", type=_tasks, default=(), metavar="A,B,...",
                        help="the fixed task order (default: the dataset's tasks); T tasks = the first T")
    parser.add_argument("--budget", type=int, default=300, metavar="STEPS",
                        help="optimizer steps of every run, each training every task of the network on a batch "
                        "(default: 300, where the single-task baselines have flattened: docs/studies.md)")
    parser.add_argument("--batch-size", type=int, default=8, help="scenes per step (default: 8)")
    parser.add_argument("--size", type=int, default=64, help="scene side in pixels, at least 64 (default: 64)")
    parser.add_argument("--train-images", type=int, default=480,
                        help="training scenes; a validation after every pass over them (default: 480, so 5 "
                        "validations at the default budget)")
    parser.add_argument("--test-images", type=int, default=100,
                        help="validation and scored test scenes (default: 100)")
    parser.add_argument("--seeds", type=int, default=3, metavar="N",
                        help="train every network with seeds 0 .. N-1 and report mean, sd and 95 %% intervals over "
                        "them (default: 3); finished seeds are reused when N grows")
    parser.add_argument("--measure-batch", type=int, default=16,
                        help="images per batch of the all-task inference measurement (default: 16)")
    parser.add_argument("--measure-repeats", type=int, default=7,
                        help="timed repeats of each measurement, median and range reported (default: 7)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value of every run, repeatable (tsn train --set syntax)")
    parser.add_argument("--jobs", type=int,
                        help="runs trained at once (default: one per core on a CPU, one thread each)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or training logs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    studies = parser.add_subparsers(dest="study", metavar="STUDY", required=True)
    tasks = studies.add_parser("tasks", help="TSN vs multi-head vs single task at T = 2, 4, 8, 12 tasks",
                               description=DESCRIPTION)
    _common(tasks)
    tasks.add_argument("--counts", type=_ints, default=(), metavar="T,T,...",
                       help="task counts (default: 2,4,8,12 up to the number of tasks, then that number)")
    labels = studies.add_parser("labels", help="TSN average drop as the labelled fraction of some tasks falls",
                                description=DESCRIPTION)
    _common(labels)
    labels.add_argument("--count", type=int, default=4, help="tasks of the TSN, the first of the order (default 4)")
    labels.add_argument("--partial", type=_tasks, default=(), metavar="A,B",
                        help="tasks labelled on a fraction of the scenes (default: the first two)")
    labels.add_argument("--fractions", type=_floats, default=(1.0, 0.5, 0.25, 0.1), metavar="F,F,...",
                        help="labelled fractions (default: 1,0.5,0.25,0.1)")


def run(args: argparse.Namespace) -> int:
    from tsn.studies.scaling import StudySettings, labels_markdown, run_labels_study, run_tasks_study, tasks_markdown
    from tsn.utils.checks import ensure_writable_dir, require_int

    if args.jobs is not None:
        require_int("--jobs", args.jobs, minimum=1)
    settings = StudySettings(
        dataset=args.dataset, family=args.family, tasks=args.tasks, counts=getattr(args, "counts", ()),
        steps=args.budget, batch_size=args.batch_size, size=args.size, train_images=args.train_images,
        test_images=args.test_images, seeds=args.seeds, overrides=tuple(args.overrides),
        measure_batch=args.measure_batch, measure_repeats=args.measure_repeats,
    )
    ensure_writable_dir(args.out, "--out", create=False)  # probed before any work; created by the first run
    common = {"jobs": args.jobs, "progress": not args.quiet}
    if args.study == "tasks":
        record = run_tasks_study(settings, args.out, **common)
        print(tasks_markdown(record))
        print(f"wrote {escaped(args.out / 'tasks.md')}, tasks.json and study_tasks.png")
    else:
        record = run_labels_study(settings, args.out, count=args.count, partial=args.partial,
                                  fractions=args.fractions, **common)
        print(labels_markdown(record))
        print(f"wrote {escaped(args.out / 'labels.md')}, labels.json and study_labels.png")
    return 0
