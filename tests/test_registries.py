"""Every extension point is one registry, and every registry refuses the same way, in one line.

In the manner of timm's tests parametrised over its model registry: one case per extension point (tasks, datasets,
output kinds, losses, architectures, backbone adapters, metric families, training callbacks, evaluation protocols,
prediction conventions), each registering a name that is already taken and looking up one that does not exist,
through the public ``register_*`` / ``get_*`` functions a plugin uses. The messages must read::

    <what> '<name>' is already registered (<where the entry comes from>); choose another name
    unknown <what> '<name>'; known: <every registered name> (<how to register one>)

A registry still kept in a module's own dict (not a :class:`tsn.utils.registry.Registry`) whose messages differ is
reported as an expected failure naming the module, so the table shows what is left to move; once it is a
``Registry``, any difference fails.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest

from tsn.errors import TsnError
from tsn.utils.registry import Registry

UNKNOWN = "no_such_name"


@dataclass(frozen=True)
class Case:
    """One extension point, as a plugin sees it."""

    module: ModuleType
    """The module that holds the registry."""
    what: str
    """What the messages call an entry."""
    taken: str
    """A built-in name (or alias) a duplicate registration uses."""
    register_again: Callable[[], object]
    """Registers something new under ``taken`` through the public function."""
    lookup: Callable[[str], object]
    known: Callable[[], list[str]]
    owner: str | None = None
    """The canonical name ``taken`` belongs to, where it is an alias."""


def _task() -> Case:
    from tsn import tasks

    return Case(tasks, "task", "semseg", lambda: tasks.register_task(tasks.get_task("semseg")), tasks.get_task,
                lambda: list(tasks.TASKS))


def _task_alias() -> Case:
    from tsn import tasks

    roads = dataclasses.replace(tasks.get_task("saliency"), name="roads", title="Roads", aliases=("road", " SEG"))
    return Case(tasks, "task", " SEG", lambda: tasks.register_task(roads), tasks.get_task, lambda: list(tasks.TASKS),
                owner="semseg")


def _dataset() -> Case:
    from tsn import dataset_catalog as catalog

    return Case(catalog, "dataset", "synthetic", lambda: catalog.register_dataset(catalog.get_dataset("synthetic")),
                catalog.get_dataset, catalog.list_datasets)


def _dataset_alias() -> Case:
    from tsn import dataset_catalog as catalog

    spec = catalog.DatasetSpec(name="other", title="Other", tasks={"depth": 1}, loader="m:C", aliases=("NYU-v2",))
    return Case(catalog, "dataset", "NYU-v2", lambda: catalog.register_dataset(spec), catalog.get_dataset,
                catalog.list_datasets, owner="nyuv2_13")


def _kind() -> Case:
    from tsn import kinds

    return Case(kinds, "output kind", "scalar", lambda: kinds.register_kind(kinds.ScalarMap()), kinds.get_kind,
                lambda: list(kinds.KINDS))


def _loss() -> Case:
    from tsn.training import losses

    return Case(losses, "loss", "depth_l1", lambda: losses.register_loss("depth_l1", lambda raw, label, **_: raw),
                losses.get_loss, lambda: list(losses.LOSSES))


def _architecture() -> Case:
    from tsn.models import architectures

    return Case(architectures, "architecture", "tsn", lambda: architectures.register_architecture("tsn", print),
                architectures.get_architecture, architectures.list_architectures)


def _backbone_adapter() -> Case:
    from tsn.models import backbone_adapters as adapters

    again = type("PatchGridAgain", (adapters.BackboneAdapter,), {"name": "patch_grid", "matches": lambda s, e: False})
    return Case(adapters, "backbone adapter", "patch_grid", lambda: adapters.register_backbone_adapter(again),
                adapters.get_backbone_adapter, lambda: list(adapters.BACKBONE_ADAPTERS))


def _metric_family() -> Case:
    from tsn.metrics import families

    taken = families.list_metric_families()[0]
    return Case(families, "metric family", taken, lambda: families.register_metric_family(taken, print),
                families.get_metric_family, families.list_metric_families)


def _callback() -> Case:
    from tsn.training.callbacks import base

    taken = "early_stopping"
    importlib.import_module("tsn.training.callbacks")  # registers the packaged callbacks
    again = type("EarlyStoppingAgain", (base.Callback,), {})
    return Case(base, "callback", taken, lambda: base.register_callback(taken)(again), base.get_callback,
                base.list_callbacks)


def _protocol() -> Case:
    from tsn.evaluation import protocols

    taken = protocols.list_protocols()[0]
    again = dataclasses.replace(protocols.get_protocol(taken))
    return Case(protocols, "evaluation protocol", taken, lambda: protocols.register_protocol(again),
                protocols.get_protocol, protocols.list_protocols)


def _convention() -> Case:
    from tsn.inference import conventions

    taken = conventions.list_conventions()[0]
    return Case(conventions, "prediction convention", taken,
                lambda: conventions.register_convention(conventions.get_convention(taken)),
                conventions.get_convention, conventions.list_conventions)


CASES: dict[str, Callable[[], Case]] = {
    "task": _task, "task-alias": _task_alias, "dataset": _dataset, "dataset-alias": _dataset_alias, "kind": _kind,
    "loss": _loss, "architecture": _architecture, "backbone_adapter": _backbone_adapter,
    "metric_family": _metric_family, "callback": _callback, "protocol": _protocol, "convention": _convention,
}


@pytest.fixture(params=list(CASES))
def case(request: pytest.FixtureRequest) -> Iterator[Case]:
    """The case, with every registry of its module as it was before (a registration that should have been refused
    but was not must not leak into the rest of the suite)."""
    built = CASES[request.param]()
    tables = [table for name, table in vars(built.module).items() if isinstance(table, dict) and name[:2] != "__"]
    tables += [table.aliases for table in tables if isinstance(table, Registry)]
    saved = [(table, dict(table)) for table in tables]
    yield built
    for table, content in saved:
        table.clear()
        table.update(content)


def _on_registry(module: ModuleType) -> bool:
    return any(isinstance(value, Registry) for value in vars(module).values())


def _uniform(case: Case, message: str, pattern: str) -> re.Match[str] | None:
    """The match of ``pattern`` (the shared message); every extension point is a :class:`Registry`."""
    assert "\n" not in message and message.strip() == message, f"not one line: {message!r}"
    assert _on_registry(case.module), f"{case.module.__name__} keeps its own table, not a tsn.utils.registry.Registry"
    match = re.fullmatch(pattern, message)
    assert match is not None, f"{message!r} is not the shared message {pattern!r}"
    return match


def test_a_taken_name_is_refused_in_one_line_and_nothing_changes(case: Case) -> None:
    before = case.lookup(case.taken)
    known = case.known()
    with pytest.raises(TsnError) as error:
        case.register_again()
    origin = rf"an alias of '{case.owner}'" if case.owner else r"[^\n]+"
    _uniform(case, str(error.value),
             rf"{re.escape(case.what)} {re.escape(repr(case.taken))} is already registered \({origin}\); "
             "choose another name")
    assert case.lookup(case.taken) is before and case.known() == known


def test_an_unknown_name_is_refused_in_one_line_listing_the_known_ones(case: Case) -> None:
    with pytest.raises(TsnError) as error:
        case.lookup(UNKNOWN)
    match = _uniform(case, str(error.value),
                     rf"unknown {re.escape(case.what)} '{UNKNOWN}'; known: (?P<known>[^()]+?)( \([^\n]+\))?")
    assert match is not None and sorted(match["known"].split(", ")) == sorted(case.known())


def test_every_registry_of_the_package_has_a_case() -> None:
    """A new extension point built on :class:`Registry` gets a row above (this sees the modules imported so far:
    the cases import every module that holds one today)."""
    covered = {build().what for build in CASES.values()}
    for name, module in list(sys.modules.items()):
        if name == "tsn" or name.startswith("tsn."):
            for value in vars(module).values():
                assert not isinstance(value, Registry) or value.what in covered, f"{name}: {value.what}"


# ---------------------------------------------------------------------------------- the Registry class itself
def test_spellings_and_aliases_mean_their_entry() -> None:
    from tsn.dataset_catalog import canonical_dataset_name, get_dataset
    from tsn.kinds import BINARY, get_kind
    from tsn.tasks import get_task

    assert get_task(" SEG ").name == "semseg" and get_task("Parts").name == "human_parts"
    assert get_dataset(" NYU-v2").name == "nyuv2_13" and canonical_dataset_name("PASCAL-Context") == "pascal_context"
    assert get_kind(" Binary") is BINARY


def _things() -> Registry[Any]:
    return Registry("thing", "register one with make_thing", normalize=lambda name: name.strip().lower())


def test_register_adds_a_name_and_its_aliases_at_once_or_nothing() -> None:
    things = _things()

    @things.register("disc", aliases=("Round", "circle"))
    def disc() -> None: ...

    assert things.lookup(" DISC") is disc and things.lookup("round") is disc and things.canonical("Circle") == "disc"
    assert list(things) == ["disc"] and things.aliases == {"round": "disc", "circle": "disc"}
    with pytest.raises(TsnError, match=r"^thing 'CIRCLE' is already registered \(an alias of 'disc'\); choose"):
        things.register("ring", print, aliases=("loop", "CIRCLE"))
    assert list(things) == ["disc"] and "loop" not in things.aliases  # the refused entry left nothing behind
    with pytest.raises(TsnError, match=r"^unknown thing 'ring'; known: disc \(register one with make_thing\)$"):
        things.lookup("ring")


@pytest.mark.parametrize("name, aliases, message", [
    ("two words", (), "a thing name must be a Python identifier such as 'my_thing', got 'two words'"),
    (3, (), "a thing name must be a Python identifier"),
    ("Disc", (), "a thing name must be written as it is looked up, 'disc', got 'Disc'"),
    ("disc", ("",), "thing 'disc': every alias must be a non-empty name, got \\(''"),
    ("disc", (None,), "thing 'disc': every alias must be a non-empty name"),
])
def test_a_malformed_name_is_refused_in_one_line(name: Any, aliases: tuple[Any, ...], message: str) -> None:
    things = _things()
    with pytest.raises(TsnError, match=message) as error:
        things.register(name, print, aliases=aliases)
    assert "\n" not in str(error.value) and not things and not things.aliases


def test_a_name_pattern_replaces_the_identifier_rule() -> None:
    protocols = Registry("protocol", name_pattern=r"[a-z][a-z0-9_-]*")
    assert protocols.register("mtl-survey", print) is print and protocols.lookup("mtl-survey") is print
    with pytest.raises(TsnError, match=r"^a protocol name must match \[a-z\]\[a-z0-9_-\]\*, got 'MTL survey'$"):
        protocols.register("MTL survey", print)


def test_unregister_frees_the_name_and_its_aliases() -> None:
    things = _things()
    things.register("disc", print, aliases=("round",))
    assert things.unregister("ROUND") is print and not things and not things.aliases
    things.register("round", len)  # the former alias is a free name again
    assert things.lookup("round") is len
    things.register("disc", print, aliases=("circle",))
    del things["disc"]  # a plain dict removal (how tests restore a registry) frees the aliases too
    with pytest.raises(TsnError, match="unknown thing 'circle'"):
        things.lookup("circle")
    assert things.register("circle", abs) is abs
