"""Callbacks of the training loop: the public API to add behaviour to ``tsn train`` without editing the package.

```python
from tsn.training.callbacks import Callback, register_callback

@register_callback("grad_norm")           # optional: lets a train config name it (callbacks: [grad_norm])
class GradNorm(Callback):
    def after_step(self, loop, step, losses):
        ...                               # loop.model, loop.optimizer, loop.state.step, loop.log ...
```

Add it from a train config (``callbacks: [grad_norm]`` with ``tsn --plugin my_file.py train ...``, or
``callbacks: ["my_module:GradNorm"]``, or ``{name: ..., options: {...}}`` for keyword arguments), or from Python:
``train(config, out, callbacks=[GradNorm()])``. The hooks, their order and the built-in callbacks are described
in :mod:`tsn.training.callbacks.base` and docs/training.md. Packaged callbacks a config can name:
``early_stopping`` (:class:`EarlyStopping`).
"""

from tsn.training.callbacks.base import (
    HOOKS,
    Callback,
    CallbackFactory,
    build_callback,
    build_callbacks,
    check_callback_entries,
    get_callback,
    list_callbacks,
    register_callback,
    resolve_callback,
)
from tsn.training.callbacks.best import Validation
from tsn.training.callbacks.checkpoints import Checkpointer
from tsn.training.callbacks.early_stopping import EarlyStopping
from tsn.training.callbacks.progress import ProgressBar
from tsn.training.callbacks.run_log import TensorBoard, TrainLog
from tsn.training.callbacks.signals import StopOnSignal

__all__ = [
    "HOOKS",
    "Callback",
    "CallbackFactory",
    "register_callback",
    "get_callback",
    "list_callbacks",
    "resolve_callback",
    "build_callback",
    "build_callbacks",
    "check_callback_entries",
    "ProgressBar",
    "TrainLog",
    "TensorBoard",
    "Validation",
    "Checkpointer",
    "StopOnSignal",
    "EarlyStopping",
]
