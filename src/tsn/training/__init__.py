"""The training engine: configs and presets, task schedules, the training loop, validation, checkpoints.

```python
from tsn.training import load_config, train

config = load_config("tsn_r10t_synthetic", ["optim.lr=0.002"]) # a preset name or a YAML path, plus --set overrides
result = train(config, "runs/my-run")                       # -> RunResult(status, best, checkpoint, ...)
result = train(None, "runs/my-run", resume=True)            # continue an interrupted run exactly
```

Behaviour is added to the loop with callbacks (:mod:`tsn.training.callbacks`), from a config's ``callbacks`` list
or from Python: ``train(config, "runs/my-run", callbacks=[MyCallback()])``.
"""

from tsn.training.callbacks import Callback, register_callback
from tsn.training.loop import RunResult, TrainLoop
from tsn.training.schedules import Step, epoch_plan
from tsn.training.train_config import SCHEDULES, DataConfig, OptimConfig, SchedulerConfig, TrainConfig, ValidationConfig
from tsn.training.train_config_loading import apply_overrides, config_from_dict, list_presets, load_config
from tsn.training.trainer import resume_config, train
from tsn.training.validation import ConstantPredictor, ValidationResult, fit_constant_predictor, validate

__all__ = [
    "SCHEDULES",
    "DataConfig",
    "OptimConfig",
    "SchedulerConfig",
    "ValidationConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "list_presets",
    "load_config",
    "Step",
    "epoch_plan",
    "train",
    "resume_config",
    "RunResult",
    "Callback",
    "register_callback",
    "TrainLoop",
    "validate",
    "ValidationResult",
    "ConstantPredictor",
    "fit_constant_predictor",
]
