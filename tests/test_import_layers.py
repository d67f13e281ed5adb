"""The package's rooms import only downwards: commands -> serving -> studies -> training -> evaluation ->
inference -> hub -> models / data -> tasks / kinds / dataset_catalog -> metrics -> run_folder -> utils / precision
-> errors. A module may import its own room and any room below it. Metrics are pure array code below the tasks:
an output kind owns its metric, never the reverse."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tsn"

# Rooms from the bottom up; rooms on one level do not import each other unless listed in ALLOWED_SIDEWAYS.
LEVELS: list[set[str]] = [
    {"errors"},
    {"utils", "precision"},  # precision: the one mixed-precision policy (training, validation, inference, benchmark)
    {"run_folder"},  # the run folder's layout: paths only (the loader and every command resolve runs with it)
    {"metrics"},
    {"tasks", "kinds", "dataset_catalog"},
    {"models", "data"},
    {"hub"},  # pretrained folders and the Hugging Face Hub: saves and loads models, reads run and evaluation files
    {"inference"},
    {"evaluation"},
    {"training"},
    {"studies"},
    {"serving"},  # tsn serve: the page may train the demo model (studies) when there is no checkpoint yet
    {"commands"},
    {"plugins"},  # imports user modules (which may use anything) before a command runs
    {"cli"},
    {"__main__"},
]
ALLOWED_SIDEWAYS: set[tuple[str, str]] = {
    ("tasks", "kinds"),  # a task holds its output kind
    ("dataset_catalog", "tasks"),  # a dataset lists its tasks
    ("dataset_catalog", "kinds"),
}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _level(room: str) -> int:
    for index, rooms in enumerate(LEVELS):
        if room in rooms:
            return index
    raise AssertionError(f"room {room!r} is not placed in LEVELS")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("tsn"):
            if node.module == "tsn":
                for alias in node.names:  # a submodule, or a name of the package itself (__version__)
                    is_module = (PACKAGE / alias.name).is_dir() or (PACKAGE / f"{alias.name}.py").is_file()
                    found.append((node.lineno, f"tsn.{alias.name}" if is_module else "tsn"))
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("tsn.")]
    return found


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    relative = path.relative_to(PACKAGE).with_suffix("")
    room = relative.parts[0]
    if relative.parts == ("__init__",):
        return  # the top-level API re-exports from every room, lazily
    own = _level(room)
    for line, module in _imports(path):
        target = _room(module)
        if target == "__init__" or target == room:
            continue
        level = _level(target)
        assert level < own or (room, target) in ALLOWED_SIDEWAYS, (
            f"{relative}.py:{line} imports {module}: room {room!r} must not import room {target!r} (up or sideways)"
        )
