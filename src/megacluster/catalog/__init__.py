"""The catalog: accelerators, fabrics, models, software stacks (and, in their own packages, sites and
reliability profiles), loaded from the YAML files in ``catalog/data``. Every entry names its source.

Lookups by short kebab-case id; an unknown id raises :class:`megacluster.errors.UserError` naming the nearest.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import UserError, unknown_name
from ..specs import FabricSpec, GPUSpec, ModelSpec

DATA = Path(__file__).parent / "data"


@functools.lru_cache(maxsize=None)
def load(name: str) -> Any:
    """Parsed content of ``catalog/data/<name>.yaml``."""
    with open(DATA / f"{name}.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def read_yaml_or_json(path: str | Path) -> Any:
    """Read a user's YAML or JSON file; malformed input becomes a one-line UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"file not found: {p}")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{p}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise UserError(f"{p}: malformed YAML{where}: {getattr(e, 'problem', e)}") from None


def validation_message(e: ValidationError, what: str) -> str:
    """One line out of a pydantic ValidationError."""
    err = e.errors()[0]
    msg = str(err["msg"]).removeprefix("Value error, ")
    loc = ".".join(str(x) for x in err["loc"])
    return f"{what}: {loc}: {msg}" if loc else f"{what}: {msg}"


def _entries(name: str, key: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for e in load(name)[key]:
        out[e["id"]] = e
        for a in e.get("aliases", []) or []:
            out[a] = e
    return out


def names(kind: str) -> list[str]:
    """Catalog ids of one kind: ``gpus``, ``fabrics``, ``models``, ``stacks``."""
    return sorted(e["id"] for e in load(kind)[kind])


@functools.lru_cache(maxsize=None)
def gpu(gpu_id: str) -> GPUSpec:
    entries = _entries("gpus", "gpus")
    if gpu_id not in entries:
        raise unknown_name("GPU", gpu_id, entries)
    return GPUSpec(**entries[gpu_id])


@functools.lru_cache(maxsize=None)
def fabric(fabric_id: str) -> FabricSpec:
    entries = _entries("fabrics", "fabrics")
    if fabric_id not in entries:
        raise unknown_name("fabric", fabric_id, entries)
    return FabricSpec(**entries[fabric_id])


def stack_constants(framework: str) -> dict[str, Any]:
    """Efficiency constants of a named software stack (``stacks.yaml``)."""
    entries = _entries("stacks", "stacks")
    if framework not in entries:
        raise unknown_name("software stack", framework, entries)
    return entries[framework]


def model(name: str) -> ModelSpec:
    """A model by catalog id or alias, or from a path: a Hugging Face ``config.json`` or a model YAML."""
    if name.endswith((".json", ".yaml", ".yml")) or "/" in name:
        from .hf import model_from_file

        return model_from_file(name)
    entries = _entries("models", "models")
    if name not in entries:
        raise unknown_name("model", name, entries)
    e = dict(entries[name])
    e.pop("id", None)
    e.pop("aliases", None)
    e.setdefault("name", name)
    try:
        return ModelSpec(**e)
    except ValidationError as err:
        raise UserError(validation_message(err, f"model {name}")) from None
