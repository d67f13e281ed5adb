"""Plugins: user modules that register tasks, datasets (and losses, kinds) before a command runs.

A plugin is an ordinary Python module whose import calls :func:`tsn.register_task`, :func:`tsn.register_dataset`
and the like (docs/extending.md). The command line loads plugins from two places, before the command runs:

* ``tsn --plugin MODULE ...`` (repeatable): ``MODULE`` is an importable module name (``my_project.tsn_tasks``;
  the current folder is searched too) or the path of a ``.py`` file;
* the entry-point group ``tsn.plugins`` of every installed distribution (``[project.entry-points."tsn.plugins"]``
  in its ``pyproject.toml``, e.g. ``aerial = "my_project.tsn_tasks"``), so an installed plugin needs no option.

In Python, importing the module is all it takes (or :func:`load_plugins`). Loading is idempotent: a module is
imported once per process, however many times it is named. A plugin that cannot be found or fails while it is
imported is reported in one line (:class:`~tsn.errors.TsnError`) before the command starts.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from types import ModuleType

from tsn.errors import TsnError
from tsn.utils.checks import one_line

__all__ = ["ENTRY_POINT_GROUP", "load_plugin", "load_plugins", "entry_point_plugins"]

ENTRY_POINT_GROUP = "tsn.plugins"
"""The entry-point group whose modules ``tsn`` imports before every command."""


def _failure(what: str, error: BaseException) -> TsnError:
    reason = one_line(error) or type(error).__name__
    return TsnError(f"plugin {what} failed while it was imported: {type(error).__name__}: {reason}")


def _module_from_file(text: str) -> ModuleType:
    """Import the ``.py`` file ``text`` as the module named after its stem (once: a second call returns it)."""
    path = Path(text)
    resolved = path.expanduser().resolve()
    if not resolved.is_file():
        raise TsnError(f"plugin {text!r} does not exist; give an importable module name or the path of a .py "
                       "file")
    name = resolved.stem
    known = sys.modules.get(name)
    if known is not None:
        if getattr(known, "__file__", None) and Path(known.__file__ or "").resolve() == resolved:
            return known
        raise TsnError(f"plugin {text!r}: a different module named {name!r} is already imported; rename the "
                       "file")
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise TsnError(f"plugin {text!r} is not a Python source file; give a .py file or a module name")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as an import would: the plugin's classes then pickle by module name (DataLoader
    # workers that are spawned rather than forked need the folder on PYTHONPATH to import it again).
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except TsnError as error:
        del sys.modules[name]
        raise TsnError(f"plugin {text!r}: {error}") from None
    except Exception as error:
        del sys.modules[name]
        raise _failure(repr(text), error) from None
    return module


def load_plugin(target: str) -> ModuleType:
    """Import one plugin: a module name (searched on ``sys.path`` and in the current folder) or a ``.py`` path."""
    text = str(target).strip()
    if not text:
        raise TsnError("--plugin needs a module name or the path of a .py file")
    if text.endswith(".py") or "/" in text or "\\" in text:
        return _module_from_file(text)
    if text in sys.modules:
        return sys.modules[text]
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.append(str(Path.cwd()))  # `python -m tsn` searches the current folder; the `tsn` script too
    try:
        return importlib.import_module(text)
    except ModuleNotFoundError as error:
        if error.name is not None and text.startswith(error.name):  # the plugin itself, not one of its imports
            raise TsnError(f"plugin {text!r} cannot be imported: no module named {error.name!r}; check the name, "
                           "install it, or add its folder to PYTHONPATH") from None
        raise _failure(repr(text), error) from None
    except TsnError as error:
        raise TsnError(f"plugin {text!r}: {error}") from None
    except Exception as error:
        raise _failure(repr(text), error) from None


def entry_point_plugins() -> list[metadata.EntryPoint]:
    """The entry points of group :data:`ENTRY_POINT_GROUP` of the installed distributions."""
    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


def load_plugins(targets: Sequence[str] = (), *, entry_points: bool = True) -> list[ModuleType]:
    """Import the installed plugins (entry points, unless ``entry_points`` is False), then ``targets`` in order.

    Returns the imported modules. A plugin that cannot be imported is a one-line :class:`~tsn.errors.TsnError`.
    """
    modules: list[ModuleType] = []
    if entry_points:
        for point in entry_point_plugins():
            where = f"{point.name!r} (entry point {point.value!r} of group {ENTRY_POINT_GROUP})"
            try:
                loaded = point.load()
                if isinstance(loaded, ModuleType):
                    modules.append(loaded)
                elif callable(loaded):  # "module:function": a function that registers when it is called
                    loaded()
            except TsnError as error:
                raise TsnError(f"plugin {where}: {error}") from None
            except Exception as error:
                raise _failure(where, error) from None
    modules.extend(load_plugin(target) for target in targets)
    return modules
