"""Share models the way the field does: a folder in the Hugging Face Hub layout, loaded by name.

A pretrained folder holds ``model.safetensors`` (the weights), ``config.json`` (the model config) and
``README.md`` (the model card: architecture, tasks, dataset, recipe, protocol and metrics, size, licence,
citation, origin), plus ``evaluation.json`` when an evaluation was given::

    import tsn

    tsn.save_pretrained(model, "tsn-r18-pascal", evaluation="evaluate-pascal_context-val.json", run="runs/r18")
    model = tsn.load_model("tsn-r18-pascal")                  # the folder
    model = tsn.load_model("hf-hub:my-lab/tsn-r18-pascal")    # the Hub, through huggingface_hub and its cache

``tsn push FOLDER ORG/NAME`` publishes a folder. The one model loader (:func:`tsn.load_model`) asks
:func:`is_pretrained_source` first and hands such sources to :func:`load_pretrained`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tsn.hub.source import (
    CARD_FILE,
    CONFIG_FILE,
    EVALUATION_FILE,
    HUB_PREFIX,
    WEIGHTS_FILE,
    HubSource,
    is_pretrained_source,
    parse_hub_source,
)

__all__ = [
    "save_pretrained",
    "save_run_pretrained",
    "load_pretrained",
    "is_pretrained_source",
    "parse_hub_source",
    "push_to_hub",
    "conversion_provenance",
    "save_converted_pretrained",
    "read_pretrained_config",
    "HubSource",
    "HUB_PREFIX",
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "CARD_FILE",
    "EVALUATION_FILE",
]

# Light on import (the loader asks is_pretrained_source about every path): torch and huggingface_hub load on use.
_LAZY = {
    "save_pretrained": "tsn.hub.folder",
    "save_run_pretrained": "tsn.hub.folder",
    "load_pretrained": "tsn.hub.folder",
    "read_pretrained_config": "tsn.hub.folder",
    "push_to_hub": "tsn.hub.remote",
    "conversion_provenance": "tsn.hub.provenance",
    "save_converted_pretrained": "tsn.hub.provenance",
}

if TYPE_CHECKING:
    from tsn.hub.folder import (
        load_pretrained,
        read_pretrained_config,
        save_pretrained,
        save_run_pretrained,
    )
    from tsn.hub.provenance import conversion_provenance, save_converted_pretrained
    from tsn.hub.remote import push_to_hub


def __getattr__(name: str) -> Any:
    import importlib

    if name not in _LAZY:
        raise AttributeError(f"module 'tsn.hub' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
