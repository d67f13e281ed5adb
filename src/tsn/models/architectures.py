"""The architecture registry: ``ModelConfig.arch`` names an entry, :func:`tsn.models.build_model` builds it.

Three architectures are built in, registered where they are defined (in the manner of timm's ``@register_model``):
``tsn`` (:class:`~tsn.models.tsn.TaskSwitchingNet`), ``multi_head`` and ``single_task``
(:mod:`tsn.models.baselines`). A user's own is one class (or function) taking a :class:`ModelConfig` and
returning a :class:`~tsn.models.base.DensePredictionModel`, decorated with :func:`register_architecture`
(docs/extending.md); training, evaluation, prediction, checkpoints and export then take it by name like the
built-in ones. A name already taken is refused in one line.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar, overload

from tsn.errors import TsnError
from tsn.utils.registry import Registry

if TYPE_CHECKING:
    from tsn.models.base import DensePredictionModel
    from tsn.models.model_config import ModelConfig

__all__ = ["ArchitectureSpec", "ARCHITECTURES", "register_architecture", "get_architecture", "list_architectures"]

Builder = Callable[["ModelConfig"], "DensePredictionModel"]
_B = TypeVar("_B", bound=Builder)


@dataclass(frozen=True)
class ArchitectureSpec:
    """One architecture: how to build it from a config, and what it requires of the config."""

    name: str
    build: Builder
    """``build(config) -> model``: usually the model class itself."""
    task_count: int | None = None
    """The number of tasks a model of this architecture has (single-task networks: 1); None for any number."""
    per_task_parameters: bool = False
    """Whether some parameters serve only some tasks (a multi-head network's decoders): a training step on a
    subset of the tasks then leaves parameters without gradient, which DistributedDataParallel must be told."""

    def check(self, config: ModelConfig) -> None:
        """A one-line :class:`TsnError` when ``config`` does not fit the architecture."""
        if self.task_count is not None and len(config.tasks) != self.task_count:
            count = "one task" if self.task_count == 1 else f"{self.task_count} tasks"
            raise TsnError(f"a {self.name} network has exactly {count}, got {len(config.tasks)}: "
                           f"{', '.join(config.tasks)}")


ARCHITECTURES: Registry[ArchitectureSpec] = Registry(
    "architecture", "register one with tsn.register_architecture in a plugin: tsn --plugin MODULE"
)
"""Every architecture by the name ``ModelConfig.arch`` gives."""


@overload
def register_architecture(
    name: str, build: _B, *, task_count: int | None = None, per_task_parameters: bool = False
) -> _B: ...


@overload
def register_architecture(
    name: str, build: None = None, *, task_count: int | None = None, per_task_parameters: bool = False
) -> Callable[[_B], _B]: ...


def register_architecture(
    name: str, build: _B | None = None, *, task_count: int | None = None, per_task_parameters: bool = False
) -> _B | Callable[[_B], _B]:
    """Register ``build`` (a model class or a function of a :class:`ModelConfig`) as architecture ``name`` and
    return it; without ``build``, a decorator that does so::

        @register_architecture("linear_probe")
        class LinearProbe(DensePredictionModel): ...

    ``task_count`` fixes the number of tasks a config of this architecture must list; ``per_task_parameters``
    says that some parameters serve only some tasks (:attr:`ArchitectureSpec.per_task_parameters`). A name
    already taken, or a
    ``build`` that cannot be called, is refused in one line.
    """
    if build is None:
        return lambda decorated: register_architecture(
            name, decorated, task_count=task_count, per_task_parameters=per_task_parameters
        )
    if not callable(build):
        raise TsnError(f"architecture {name!r}: give a model class or a function of a ModelConfig, got {build!r}")
    if task_count is not None and (isinstance(task_count, bool) or not isinstance(task_count, int) or task_count < 1):
        raise TsnError(f"architecture {name!r}: task_count must be a positive integer or None, got {task_count!r}")
    ARCHITECTURES.register(name, ArchitectureSpec(name, build, task_count, per_task_parameters))
    return build


def _builtins() -> None:
    """Import the modules whose decorators register the built-in architectures (cheap after the first call)."""
    for module in ("tsn.models.tsn", "tsn.models.baselines"):
        importlib.import_module(module)


def get_architecture(name: str) -> ArchitectureSpec:
    """The architecture registered as ``name`` (one-line :class:`TsnError` listing the known ones otherwise)."""
    _builtins()
    return ARCHITECTURES.lookup(name)


def list_architectures() -> list[str]:
    """Names of every registered architecture, built-in ones first."""
    _builtins()
    return list(ARCHITECTURES)
