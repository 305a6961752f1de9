"""The one reader of user files (plans, runs files, model configs, sites, reliability profiles, training data).

Every file a user names goes through here, so every command fails the same way on a bad one: one
:class:`UserError` line naming the file and what is wrong. What is read is bounded, so that no file can eat
the machine's memory or time:

- size: at most :data:`MAX_BYTES` (a file of figures; training text has its own, larger bound);
- text: UTF-8 (a byte-order mark is allowed), else an error naming the first bad byte;
- YAML: parsed and composed with libyaml's C loader where PyYAML has it (``yaml.CSafeLoader``); before any
  Python value is built, the node graph is checked for nesting depth (:data:`MAX_DEPTH`), the number of values
  once every alias is expanded (:data:`MAX_VALUES`; the "billion laughs" bomb expands a few hundred bytes into
  10^9 values) and aliases that contain themselves;
- JSON: the same bounds, and ``NaN``/``Infinity`` refused (they are not JSON);
- numbers: a value that is not finite (YAML ``.nan``, ``.inf``, or a float that overflows) is refused with
  the place it is at.

:func:`megacluster.errors.short` writes any value as a short excerpt for error messages (a value from a user's
file may be megabytes long or, through aliases, exponentially large).
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError, short

MAX_BYTES = 4 * 2 ** 20          # 4 MiB: 25 times the catalog's published runs file (160 KB)
MAX_TEXT_BYTES = 2 ** 30         # 1 GiB of training text (`train --data`)
MAX_DEPTH = 64                   # nested mappings/lists; the catalog's deepest file nests 6 levels
MAX_VALUES = 1_000_000           # scalars and collections after alias expansion

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
def _size_text(n: int) -> str:
    return f"{n / 2 ** 20:.1f} MiB" if n >= 2 ** 20 else f"{n / 1024:.0f} KiB" if n >= 1024 else f"{n} bytes"


def read_bytes(path: str | Path, what: str = "file", max_bytes: int = MAX_BYTES, hint: str = "") -> bytes:
    """The bytes of a regular file of at most ``max_bytes``; every failure is a one-line UserError.

    ``what`` names the file's role in messages (``plan``, ``runs file``); ``hint`` is appended to "not found"."""
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except FileNotFoundError:
        raise UserError(f"{what} not found: {p}{hint}") from None
    except PermissionError:
        raise UserError(f"cannot read {what} {p}: permission denied") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {p}: {e.strerror or e.__class__.__name__}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{what} {p} is a directory; give a file")
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{what} {p} is not a regular file (a device, pipe or socket); give a file")
    if st.st_size > max_bytes:
        raise UserError(f"{what} {p} is {_size_text(st.st_size)}; megacluster reads files of at most "
                        f"{_size_text(max_bytes)}")
    try:
        with open(p, "rb") as f:
            data = f.read(max_bytes + 1)
    except PermissionError:
        raise UserError(f"cannot read {what} {p}: permission denied") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {p}: {e.strerror or e.__class__.__name__}") from None
    if len(data) > max_bytes:
        raise UserError(f"{what} {p} is larger than {_size_text(max_bytes)}, the most megacluster reads")
    return data


def decode(data: bytes, where: str) -> str:
    """UTF-8 text (a leading byte-order mark dropped), else a UserError naming the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{where}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); save the "
                        "file as UTF-8") from None


def read_text(path: str | Path, what: str = "file", max_bytes: int = MAX_BYTES, hint: str = "") -> str:
    """A user's text file as a string: :func:`read_bytes` then :func:`decode`."""
    return decode(read_bytes(path, what, max_bytes, hint), str(Path(path).expanduser()))


# ------------------------------------------------------------------------------------------------ YAML
def _children(node: yaml.Node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [x for pair in node.value for x in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_nodes(root: yaml.Node, where: str) -> None:
    """Bound the composed YAML graph before anything is built from it: nesting depth, and (where aliases share
    nodes) the number of values once every alias is expanded. Iterative; one quick pass over the nodes."""
    seen: set[int] = set()
    shared = False
    todo = [(root, 0)]
    while todo:
        node, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise UserError(f"{where}: nested more than {MAX_DEPTH} levels deep (line {node.start_mark.line + 1})")
        if id(node) in seen:
            shared = True
            continue
        seen.add(id(node))
        value = node.value
        if isinstance(node, yaml.MappingNode):
            todo.extend((x, depth + 1) for pair in value for x in pair)
        elif isinstance(node, yaml.SequenceNode):
            todo.extend((x, depth + 1) for x in value)
    if shared:
        _check_expansion(root, where)


def _check_expansion(root: yaml.Node, where: str) -> None:
    """The number of values once every alias (a shared node) is expanded, each shared node counted once (so a
    billion-laughs file costs its size here, not 10^9); a node that contains itself is refused."""
    memo: dict[int, int] = {}                        # node -> values once expanded
    open_nodes: set[int] = set()                     # the path from the root to the node being expanded
    todo: list[tuple[yaml.Node, bool]] = [(root, False)]
    while todo:
        node, finished = todo.pop()
        nid = id(node)
        if finished:
            kids = _children(node)
            size = 1 + sum(memo[id(c)] for c in kids)
            open_nodes.discard(nid)
            if size > MAX_VALUES:
                raise UserError(f"{where}: more than {MAX_VALUES:,} values once its aliases (*name) are expanded; "
                                "megacluster refuses such files (a YAML alias bomb?)")
            memo[nid] = size
            continue
        if nid in memo:
            continue
        open_nodes.add(nid)
        todo.append((node, True))
        for c in _children(node):
            if id(c) in open_nodes:
                raise UserError(f"{where}: an alias refers to a node that contains it (line {c.start_mark.line + 1})")
            if id(c) not in memo:
                todo.append((c, False))


def parse_yaml(text: str, where: str, finite: bool = True) -> Any:
    """Parse YAML text (bounded as the module says); malformed YAML is a one-line UserError. ``finite=False``
    lets non-finite numbers through for a caller that checks each entry itself (a runs file)."""
    try:
        loader = _LOADER(text)
        try:
            node = loader.get_single_node()          # libyaml parses and composes (nesting capped at 1000)
            if node is not None:
                _check_nodes(node, where)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{where}: malformed YAML{at}: {problem}") from None
    except (ValueError, OverflowError, RecursionError, MemoryError) as e:
        raise UserError(f"{where}: cannot read a value ({e.__class__.__name__}: "
                        f"{short(str(e).splitlines()[0] if str(e) else '', 80)})") from None
    check_values(data, where, finite)
    return data


# ------------------------------------------------------------------------------------------------ JSON
def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: str, where: str, finite: bool = True) -> Any:
    """Parse JSON text (no NaN/Infinity; bounded depth and size); malformed JSON is a one-line UserError."""
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise UserError(f"{where}: nested more than {MAX_DEPTH} levels deep") from None
    except (ValueError, OverflowError, MemoryError) as e:
        raise UserError(f"{where}: cannot read a value ({short(str(e).splitlines()[0] if str(e) else '', 80)})"
                        ) from None
    check_values(data, where, finite)
    return data


def check_values(data: Any, where: str, finite: bool = True) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH`, more than :data:`MAX_VALUES` values (aliases counted
    each time they are used) and numbers that are not finite; iterative, so no input can overflow the stack."""
    todo: list[tuple[Any, str, int]] = [(data, "", 0)]
    seen = 0
    while todo:
        v, at, depth = todo.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise UserError(f"{where}: more than {MAX_VALUES:,} values; megacluster refuses such files")
        if depth > MAX_DEPTH:
            raise UserError(f"{where}: nested more than {MAX_DEPTH} levels deep")
        if finite and isinstance(v, float) and not math.isfinite(v):
            raise UserError(f"{where}: {at.lstrip('.') or 'value'} is {v}, not a finite number")
        if isinstance(v, dict):
            todo.extend((x, f"{at}.{short(k, 30) if not isinstance(k, str) else k[:30]}", depth + 1)
                        for k, x in v.items())
        elif isinstance(v, list):
            todo.extend((x, f"{at}[{i}]", depth + 1) for i, x in enumerate(v))


def read_yaml_or_json(path: str | Path, what: str = "file", hint: str = "", finite: bool = True) -> Any:
    """A user's YAML or JSON file, parsed (JSON where the name ends in ``.json``, else YAML: YAML reads JSON
    too); every failure (missing, unreadable, too large, not UTF-8, malformed, hostile) is one UserError line.
    ``finite=False``: non-finite numbers are left for the caller to refuse entry by entry."""
    p = Path(path).expanduser()
    text = read_text(p, what, hint=hint)
    where = str(p)
    if p.suffix.lower() == ".json":
        return parse_json(text, where, finite)
    return parse_yaml(text, where, finite)


def is_file(path: str | Path) -> bool:
    """Whether ``path`` names an existing regular file (False for directories, devices and unreadable paths)."""
    try:
        return stat.S_ISREG(os.stat(Path(path).expanduser()).st_mode)
    except (OSError, ValueError):
        return False
