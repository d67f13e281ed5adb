"""Plugins: user modules that register tasks, datasets, output kinds, losses, architectures and backbone adapters
before a command runs.

A plugin is an ordinary Python module whose import calls :func:`tsn.register_task`, :func:`tsn.register_dataset`,
:func:`tsn.register_kind`, :func:`tsn.register_loss`, :func:`tsn.register_architecture` or
:func:`tsn.register_backbone_adapter` (docs/extending.md); a name that another module already registered is
refused in one line, naming the plugin. The command line loads plugins from two places, before the command runs:

* ``tsn --plugin MODULE ...`` (repeatable): ``MODULE`` is an importable module name (``my_project.tsn_tasks``;
  the current folder is searched too) or the path of a ``.py`` file;
* the entry-point group ``tsn.plugins`` of every installed distribution (``[project.entry-points."tsn.plugins"]``
  in its ``pyproject.toml``, e.g. ``aerial = "my_project.tsn_tasks"``), so an installed plugin needs no option.

In Python, importing the module is all it takes (or :func:`load_plugins`). Loading is idempotent: a module is
imported once per process, however many times it is named. A plugin that cannot be found or fails while it is
imported is reported in one line (:class:`~tsn.errors.TsnError`) before the command starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata
from types import ModuleType

from tsn.errors import TsnError
from tsn.utils.user_modules import load_plugin, plugin_failure

__all__ = ["ENTRY_POINT_GROUP", "load_plugin", "load_plugins", "entry_point_plugins"]

ENTRY_POINT_GROUP = "tsn.plugins"
"""The entry-point group whose modules ``tsn`` imports before every command."""


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
                raise plugin_failure(where, error) from None
    modules.extend(load_plugin(target) for target in targets)
    return modules
