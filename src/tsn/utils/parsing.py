"""Reading text and YAML from outside (config files, ``--set`` and ``--dataset-option`` values) with bounds.

PyYAML builds nested collections recursively, so ``[[[[...]]]]`` a few thousand levels deep ends in a
``RecursionError``; aliases let a 1 KB document stand for a billion nodes ("billion laughs") that any later walk
over the config expands; a file that is not UTF-8 ends in a ``UnicodeDecodeError``; a named pipe given as a
config blocks forever. Here the text is checked first, with PyYAML's event stream (an iterative parser: no
recursion, nothing built), and every problem is a one-line :class:`~tsn.errors.TsnError` saying what is wrong
and how to fix it:

* at most :data:`MAX_DEPTH` levels of nesting, at most :data:`MAX_NODES` nodes with every alias expanded;
* text files: regular files of at most :data:`MAX_TEXT_BYTES`, UTF-8 (a byte-order mark is allowed).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from tsn.errors import TsnError
from tsn.utils.checks import escaped, file_kind, one_line

__all__ = ["MAX_DEPTH", "MAX_NODES", "MAX_TEXT_BYTES", "parse_json", "parse_yaml", "read_text_file"]

MAX_DEPTH = 32
"""Nesting levels of a config; the deepest packaged config has four."""
MAX_NODES = 100_000
"""Scalars and collections of a document, aliases expanded; a packaged config has a few hundred."""
MAX_TEXT_BYTES = 4 * 1024 * 1024


def read_text_file(path: str | os.PathLike[str], what: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of the regular file ``path``, or a one-line error naming ``what`` it should have been."""
    target = Path(path).expanduser()
    try:
        info = target.stat()
    except OSError as error:
        raise TsnError(f"{what} {escaped(target)} cannot be read ({one_line(error.strerror or error)}); check the "
                       "path") from None
    if not stat.S_ISREG(info.st_mode):
        raise TsnError(f"{what} {escaped(target)} is {file_kind(info.st_mode)}, not a text file; give a file path")
    if info.st_size > max_bytes:
        raise TsnError(f"{what} {escaped(target)} is {info.st_size:,} bytes, more than a text file of this kind "
                       f"can be ({max_bytes:,}); give the right file")
    try:
        with target.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as error:
        raise TsnError(f"{what} {escaped(target)} cannot be read ({one_line(error.strerror or error)}); check its "
                       "permissions") from None
    if b"\x00" in data:
        raise TsnError(f"{what} {escaped(target)} is a binary file, not text; give the right file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise TsnError(f"{what} {escaped(target)} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset "
                       f"{error.start}); save it as UTF-8") from None


def _check_events(text: str, where: str) -> None:
    """Walk the YAML event stream (iteratively) and refuse deep nesting and alias expansions over the bounds."""
    import yaml

    sizes: dict[str, int] = {}  # anchor -> nodes it stands for
    stack: list[list[Any]] = []  # open collections: [nodes so far, anchor]
    total = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if len(stack) >= MAX_DEPTH:
                raise TsnError(f"{where} is nested more than {MAX_DEPTH} levels deep; a config needs a few levels: "
                               "check the brackets and indentation")
            stack.append([1, event.anchor])
            continue
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            count, anchor = stack.pop()
        elif isinstance(event, yaml.ScalarEvent):
            count, anchor = 1, event.anchor
        elif isinstance(event, yaml.AliasEvent):
            count, anchor = sizes.get(event.anchor or "", 1), None
        else:
            continue
        if anchor is not None:
            sizes[anchor] = count
        if stack:
            stack[-1][0] += count
        else:
            total += count
        if total + sum(entry[0] for entry in stack) > MAX_NODES:
            raise TsnError(f"{where} stands for more than {MAX_NODES:,} values (aliases expanded); a config holds a "
                           "few hundred: remove the repeated aliases")


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load(text)`` within :data:`MAX_DEPTH` and :data:`MAX_NODES`, errors as one line naming
    ``where`` (a file, or ``--set KEY``)."""
    import yaml

    try:
        _check_events(text, where)
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise TsnError(f"{where} is not valid YAML: {one_line(error, 300)}") from None
    except RecursionError:  # not reached within the bounds above; kept so that no traceback can escape
        raise TsnError(f"{where} is nested too deeply; check the brackets and indentation") from None


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON / YAML (lists and dicts), found iteratively."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            break
        pending.extend((child, level + 1) for child in children)
    return deepest


def parse_json(text: str | bytes, where: str) -> Any:
    """``json.loads(text)`` within :data:`MAX_DEPTH`, errors (invalid JSON, not UTF-8, too deep) as one line
    naming ``where``."""
    import json

    try:
        value = json.loads(text)
    except UnicodeDecodeError:
        raise TsnError(f"{where} is not UTF-8 text; save it as UTF-8 JSON") from None
    except ValueError as error:
        raise TsnError(f"{where} is not valid JSON: {one_line(error, 200)}") from None
    except RecursionError:
        raise TsnError(f"{where} is nested too deeply to be what tsn wrote; give the right file") from None
    if _depth(value) > MAX_DEPTH:
        raise TsnError(f"{where} is nested more than {MAX_DEPTH} levels deep; give the right file")
    return value
