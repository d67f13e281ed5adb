"""Evaluation: score a checkpoint, or saved predictions, on a dataset under a named protocol; tables and the
average drop.

* :mod:`tsn.evaluation.protocols`: the protocol registry (``register_protocol``, ``get_protocol``,
  ``list_protocols``, ``default_protocol``);
* :mod:`tsn.evaluation.evaluate`: ``evaluate_checkpoint`` / ``evaluate_model``;
* :mod:`tsn.evaluation.saved_predictions`: ``evaluate_predictions`` (files saved by any method);
* saved-file conventions (authors, astmt, invpt) live below, in :mod:`tsn.inference.conventions`, which
  ``tsn predict --format`` writes and ``evaluate_predictions`` reads;
* :mod:`tsn.evaluation.records`: the result record, ``protocol_field`` for any table, ``check_same_protocol``;
* :mod:`tsn.evaluation.tables`: table values, baselines and the markdown.

Submodules are imported on use, so ``import tsn.evaluation`` stays light.
"""
