"""Importing a user's module by name or by the path of a ``.py`` file, once per process, with one-line errors.

The one way tsn runs code a user names: ``tsn --plugin`` (:mod:`tsn.plugins`) and a train config's
``callbacks: [module:Class]`` (:mod:`tsn.training.callbacks`) both import through :func:`load_plugin`. It lives
with the utilities, below every room, so that any room may load user code without importing the command layer.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from tsn.errors import TsnError
from tsn.utils.checks import one_line

__all__ = ["load_plugin", "plugin_failure"]


def plugin_failure(what: str, error: BaseException) -> TsnError:
    """The one-line error of a user module that raised while it was imported."""
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
        raise plugin_failure(repr(text), error) from None
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
        raise plugin_failure(repr(text), error) from None
    except TsnError as error:
        raise TsnError(f"plugin {text!r}: {error}") from None
    except Exception as error:
        raise plugin_failure(repr(text), error) from None
