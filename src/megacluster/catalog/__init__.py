"""The catalog: accelerators, fabrics, models, software stacks (and, in their own packages, sites and
reliability profiles), loaded from the YAML files in ``catalog/data``. Every entry names its source.

Lookups by short kebab-case id; an unknown id raises :class:`megacluster.errors.UserError` naming the nearest.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import UserError, short, unknown_name
from ..specs import FabricSpec, GPUSpec, ModelSpec

DATA = Path(__file__).parent / "data"


@functools.lru_cache(maxsize=None)
def load(name: str) -> Any:
    """Parsed content of ``catalog/data/<name>.yaml``."""
    with open(DATA / f"{name}.yaml", encoding="utf-8") as f:
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))   # libyaml when present


def read_yaml_or_json(path: str | Path, what: str = "file", hint: str = "", finite: bool = True) -> Any:
    """Read a user's YAML or JSON file through :mod:`megacluster.userfile` (bounded size, depth and alias
    expansion; UTF-8); anything wrong with it becomes a one-line UserError."""
    from ..userfile import read_yaml_or_json as read

    return read(path, what, hint, finite)


def validation_message(e: ValidationError, what: str) -> str:
    """One line out of a pydantic ValidationError: where, what is wrong, and (briefly) the value given; a
    count past its bound says the bound and why (:mod:`megacluster.limits`)."""
    from ..limits import why

    err = e.errors()[0]
    msg = str(err["msg"]).removeprefix("Value error, ")
    loc = ".".join(str(x) for x in err["loc"])
    given = err.get("input")
    if err.get("type") == "less_than_equal" and err["loc"] and why(str(err["loc"][-1])):
        msg = f"{short(given)} is more than megacluster accepts: {why(str(err['loc'][-1]))}"
    elif err["loc"] and not isinstance(given, (dict, list)) and err.get("type") not in ("missing", "value_error"):
        msg = f"{msg}, got {short(given)}"
    return f"{what}: {loc}: {msg}" if loc else f"{what}: {msg}"


#: entries a measured hardware profile adds or replaces (``megacluster calibrate``; see ``use_entries``)
_OVERLAY: dict[str, list[dict]] = {}


def use_entries(kind: str, entries: list[dict]) -> None:
    """Add entries of ``kind`` (gpus, fabrics, stacks) that take the place of catalog entries with the same id
    or alias for the rest of this process (a ``--hardware`` profile); an empty list removes them again."""
    _OVERLAY[kind] = [dict(e) for e in entries]
    gpu.cache_clear()
    fabric.cache_clear()


def _entries(name: str, key: str) -> dict[str, dict]:
    """Entries of one catalog file by id and by each of their aliases (runs files and users name the same
    hardware or framework in several ways: ``h100`` for ``h100-sxm``, ``nemo`` for ``megatron``)."""
    out: dict[str, dict] = {}
    for e in list(load(name)[key]) + _OVERLAY.get(name, []):
        replaced = out.get(e["id"])
        if replaced is not None:     # a measured entry takes the place of the catalog's under all its names
            out.update({k: e for k, v in out.items() if v is replaced})
        out[e["id"]] = e
        for a in e.get("aliases", []) or []:
            out[a] = e
    return out


def _key(entries: dict[str, dict], name: str) -> str:
    """``name`` as written if it is a key of ``entries``, else lower-cased and stripped."""
    return name if name in entries else str(name).strip().lower()


def _lookup(kind: str, file: str, name: str) -> dict:
    """The entry named ``name`` (an id or alias, any case), without its alias list."""
    entries = _entries(file, file)
    key = _key(entries, name)
    if key not in entries:
        raise unknown_name(kind, str(name), entries)
    e = dict(entries[key])
    e.pop("aliases", None)
    return e


def names(kind: str) -> list[str]:
    """Catalog ids of one kind: ``gpus``, ``fabrics``, ``models``, ``stacks``."""
    return sorted({e["id"] for e in list(load(kind)[kind]) + _OVERLAY.get(kind, [])})


@functools.lru_cache(maxsize=None)
def gpu(gpu_id: str) -> GPUSpec:
    return GPUSpec(**_lookup("GPU", "gpus", gpu_id))


@functools.lru_cache(maxsize=None)
def fabric(fabric_id: str) -> FabricSpec:
    return FabricSpec(**_lookup("fabric", "fabrics", fabric_id))


def stack_constants(framework: str) -> dict[str, Any]:
    """Efficiency constants of a named software stack (``stacks.yaml``), by id or alias."""
    return _lookup("software stack", "stacks", framework)


def has(kind: str, name: str) -> bool:
    """Whether ``name`` is an id or alias in catalog ``kind`` (gpus, fabrics, models, stacks)."""
    entries = _entries(kind, kind)
    return _key(entries, name) in entries


def model(name: str) -> ModelSpec:
    """A model by catalog id or alias, or from a path: a Hugging Face ``config.json`` or a model YAML."""
    if name.endswith((".json", ".yaml", ".yml")) or "/" in name:
        from .hf import model_from_file

        return model_from_file(name)
    e = _lookup("model", "models", name)
    e.pop("id", None)
    e.setdefault("name", name)
    try:
        return ModelSpec(**e)
    except ValidationError as err:
        raise UserError(validation_message(err, f"model {name}")) from None
