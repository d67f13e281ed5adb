"""The callback API of the training loop: :class:`Callback`, the registry of named callbacks and their loading.

A callback subclasses :class:`Callback` and overrides the hooks it needs; every hook receives the running
:class:`~tsn.training.loop.TrainLoop` (its config, model, optimizer, state, run folder...). The loop calls the hooks
of its callbacks in list order: the built-in ones first (progress, log, TensorBoard, validation, checkpoints,
signals), then the user's, in the order given. One run calls them as::

    before_train
    per epoch:  before_epoch, (before_step, after_step) per optimizer step,
                after_validation (when the epoch validates), after_epoch
    on_interrupt (stopped by a signal or stop_at_step, after the step in progress)
    after_train (finished or interrupted)
    close (always, last: also when the run failed)

A callback named in a train config (``callbacks:``) is either a registered name (:func:`register_callback`) or
``module:Name`` / ``path/to/file.py:Name``: a class (or function) returning a :class:`Callback`, called with the
entry's ``options`` as keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from tsn.errors import TsnError
from tsn.utils.checks import one_line
from tsn.utils.registry import Registry

if TYPE_CHECKING:
    from tsn.training.criterion import ValidationOutcome
    from tsn.training.loop import RunResult, TrainLoop
    from tsn.training.schedules import Step

__all__ = [
    "Callback",
    "HOOKS",
    "CallbackFactory",
    "CALLBACKS",
    "register_callback",
    "get_callback",
    "list_callbacks",
    "resolve_callback",
    "build_callback",
    "build_callbacks",
    "check_callback_entries",
]

HOOKS = (
    "before_train", "before_epoch", "before_step", "after_step", "after_validation", "after_epoch", "on_interrupt",
    "after_train", "close",
)
"""The hooks in the order a run first calls them."""


class Callback:
    """Behaviour added to the training loop at fixed points; every hook does nothing unless overridden.

    Under ``torchrun`` every process runs the callbacks: write files only where ``loop.ctx.is_main``, and make
    the same collective calls (``loop.save``) on every rank. A hook that raises stops the run (the exception
    propagates out of :func:`tsn.training.train`, after every callback's :meth:`close`).
    """

    def before_train(self, loop: TrainLoop) -> None:
        """Everything is built, the run folder exists and a resumed run's state is restored; no step has run."""

    def before_epoch(self, loop: TrainLoop) -> None:
        """An epoch starts (or resumes at ``loop.state.position``); ``loop.epoch_plan`` holds its steps."""

    def before_step(self, loop: TrainLoop, step: Step) -> None:
        """Optimizer step ``loop.state.step + 1`` is about to train ``step.tasks``."""

    def after_step(self, loop: TrainLoop, step: Step, losses: Mapping[str, float]) -> None:
        """One optimizer step is done: ``losses`` are its per-task training losses (unweighted, averaged over the
        accumulated micro-batches); ``loop.stopping`` says whether the run stops after it."""

    def after_validation(self, loop: TrainLoop, outcome: ValidationOutcome) -> None:
        """A validation is done and recorded in ``loop.state.history``; ``outcome.improved`` says if it is the best."""

    def after_epoch(self, loop: TrainLoop) -> None:
        """An epoch is done: ``loop.state.epoch`` counts the epochs completed (the validation ran before)."""

    def on_interrupt(self, loop: TrainLoop) -> None:
        """The run stops before its end (SIGINT / SIGTERM or ``stop_at_step``); it can be resumed."""

    def after_train(self, loop: TrainLoop, result: RunResult) -> None:
        """The run is over (``result.status``: ``finished`` or ``interrupted``)."""

    def close(self, loop: TrainLoop) -> None:
        """Release what the callback holds (files, handlers); called once, also when the run failed."""


CallbackFactory = Callable[..., Callback]
"""A :class:`Callback` subclass, or any callable returning a callback, called with the config entry's options."""

_Factory = TypeVar("_Factory", bound=CallbackFactory)

CALLBACKS: Registry[CallbackFactory] = Registry(
    "callback", "register one with @tsn.training.callbacks.register_callback in a plugin (tsn --plugin FILE), or "
    "give module:ClassName"
)
"""The callbacks a train config can name, by name (:func:`register_callback`)."""


def register_callback(name: str) -> Callable[[_Factory], _Factory]:
    """Decorator: make a callback class (or factory) available to train configs as ``callbacks: [NAME]``.

    ``NAME`` is a Python identifier, registered once: a second registration is refused in one line (name your
    callback differently).
    """

    def register(factory: _Factory) -> _Factory:
        if not callable(factory):
            raise TsnError(f"callback {name!r}: register a Callback subclass or a function returning one")
        CALLBACKS.register(name, factory)
        return factory

    return register


def list_callbacks() -> list[str]:
    """The registered callback names, sorted."""
    return sorted(CALLBACKS)


def get_callback(name: str) -> CallbackFactory:
    """The factory registered as ``name``; an unknown name is a one-line error listing the known ones."""
    return CALLBACKS.lookup(name)


def resolve_callback(name: str) -> CallbackFactory:
    """A registered name, ``module:Name`` or ``path/to/file.py:Name`` -> the callback factory.

    ``module:Name`` imports the module (as ``tsn --plugin`` does: a config that names one runs its code) and must
    name a :class:`Callback` subclass; a registered name may be any factory its plugin registered.
    """
    from tsn.utils.user_modules import load_plugin

    text = str(name).strip()
    module_name, sep, attribute = text.rpartition(":")
    if not sep or "/" in attribute or "\\" in attribute:  # a bare name (a Windows drive "C:\..." has a slash after)
        return get_callback(text)
    if not module_name or not attribute.isidentifier():
        raise TsnError(f"callback {text!r}: expected a registered name or module:ClassName")
    module = load_plugin(module_name)
    factory = getattr(module, attribute, None)
    if factory is None:
        raise TsnError(f"callback {text!r}: module {module_name!r} has no class {attribute!r}")
    # Only Callback classes: a config must not be able to call any function of any module (os:system).
    if not (isinstance(factory, type) and issubclass(factory, Callback)):
        raise TsnError(f"callback {text!r}: {attribute} is not a subclass of tsn.training.callbacks.Callback")
    return factory


def _entry(entry: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """A config entry (``NAME`` or ``{name: NAME, options: {...}}``) -> (name, options)."""
    if isinstance(entry, str):
        return entry, {}
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
        raise TsnError(f"config callbacks: {one_line(repr(entry))} is not a callback; give NAME, module:Class or "
                       "{name: NAME, options: {...}}")
    extra = sorted(set(entry) - {"name", "options"})
    if extra:
        raise TsnError(f"config callbacks: unknown key {extra[0]!r} in the entry of {entry['name']!r}; an entry "
                       "holds name and options")
    options = entry.get("options") or {}
    if not isinstance(options, Mapping):
        raise TsnError(f"config callbacks: the options of {entry['name']!r} must be a mapping")
    return entry["name"], dict(options)


def check_callback_entries(entries: Iterable[str | Mapping[str, Any]]) -> None:
    """Every entry of a config's ``callbacks`` names a callback that can be found (nothing is built)."""
    for entry in entries:
        name, _ = _entry(entry)
        try:
            resolve_callback(name)
        except TsnError as error:
            raise TsnError(f"config callbacks: {error}") from None


def build_callback(entry: str | Mapping[str, Any] | Callback) -> Callback:
    """A :class:`Callback` from a config entry (or the callback itself, as given from Python)."""
    if isinstance(entry, Callback):
        return entry
    name, options = _entry(entry)
    factory = resolve_callback(name)
    try:
        callback = factory(**options)
    except TsnError as error:
        raise TsnError(f"callback {name!r}: {error}") from None
    except (TypeError, ValueError) as error:
        raise TsnError(f"callback {name!r} cannot be built with the options {options}: {one_line(error)}") from None
    if not isinstance(callback, Callback):
        raise TsnError(f"callback {name!r} gave a {type(callback).__name__}, not a tsn.training.callbacks.Callback; "
                       "subclass Callback")
    return callback


def build_callbacks(entries: Sequence[str | Mapping[str, Any] | Callback]) -> list[Callback]:
    """:func:`build_callback` of every entry, in order."""
    return [build_callback(entry) for entry in entries]
