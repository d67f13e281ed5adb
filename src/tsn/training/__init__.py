"""The training engine: configs and presets, task schedules, the training loop, validation, checkpoints.

```python
from tsn.training import load_config, train

config = load_config("tsn_r10t_synthetic", ["optim.lr=0.002"]) # a preset name or a YAML path, plus --set overrides
result = train(config, "runs/my-run")                       # -> RunResult(status, best, checkpoint, ...)
result = train(None, "runs/my-run", resume=True)            # continue an interrupted run exactly
```
"""

from tsn.training.config import SCHEDULES, DataConfig, OptimConfig, SchedulerConfig, TrainConfig, ValidationConfig
from tsn.training.config_loading import apply_overrides, config_from_dict, list_presets, load_config
from tsn.training.schedules import Step, epoch_plan
from tsn.training.trainer import RunResult, resume_config, train
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
    "validate",
    "ValidationResult",
    "ConstantPredictor",
    "fit_constant_predictor",
]
