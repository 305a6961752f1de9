"""Hardware profiles: what ``megacluster calibrate`` measured on one machine, as catalog entries.

A profile is one YAML file::

    megacluster_hardware_profile: 1        # format version (a file without it is not a profile)
    measured: {date, host, device, threads, processes, backend, python, torch, numpy, quick}
    gpus: [ {a GPUSpec entry, catalog format} , ...]   # one per device setting measured (CPU: per thread count)
    fabrics: [ {a FabricSpec entry} ]
    stacks: [ {a stacks.yaml entry} ]     # only after ``calibrate --from-metrics`` refined stack constants
    fits: {device id: {gemm: ..., attention: ..., memory: ..., launch: ..., collectives: ...}}
    points: {device id: {gemm: [[m, n, k, seconds], ...], ...}}   # the raw measurements
    refinements: [ {...} ]                # what each --from-metrics fit moved

``use_hardware`` is the one resolver every command's ``--hardware`` goes through: it checks the file, puts its
entries in place of the catalog's (same id: replaced, new id: added) and returns the device id to use.
No torch here: planning reads profiles without PyTorch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import ValidationError

from .. import catalog
from ..errors import UserError
from ..specs import FabricSpec, GPUSpec

FORMAT_KEY = "megacluster_hardware_profile"
FORMAT_VERSION = 1


def _fail(path, what: str) -> UserError:
    return UserError(f"hardware profile {path}: {what} (write one with `megacluster calibrate --out FILE`)")


def read_profile(path: str | Path) -> dict[str, Any]:
    """The checked content of a profile file: every GPU and fabric entry valid, at least one GPU entry.
    A malformed or foreign file raises a one-line UserError."""
    data = catalog.read_yaml_or_json(path)
    if not isinstance(data, dict) or FORMAT_KEY not in data:
        raise _fail(path, f"not a megacluster hardware profile (no {FORMAT_KEY}: key)")
    if data[FORMAT_KEY] != FORMAT_VERSION:
        raise _fail(path, f"format version {data[FORMAT_KEY]!r} is not {FORMAT_VERSION}")
    gpus = data.get("gpus")
    if not isinstance(gpus, list) or not gpus:
        raise _fail(path, "no gpus: entries")
    for kind, spec in (("gpus", GPUSpec), ("fabrics", FabricSpec)):
        entries = data.get(kind) or []
        if not isinstance(entries, list):
            raise _fail(path, f"{kind}: must be a list of entries")
        for e in entries:
            if not isinstance(e, dict) or "id" not in e:
                raise _fail(path, f"an entry of {kind}: has no id")
            try:
                spec(**{k: v for k, v in e.items() if k != "aliases"})
            except ValidationError as err:
                raise _fail(path, catalog.validation_message(err, f"{kind} {e['id']}")) from None
    for e in data.get("stacks") or []:
        if not isinstance(e, dict) or "id" not in e or not isinstance(e.get("by_generation"), dict):
            raise _fail(path, "an entry of stacks: needs an id and by_generation")
    return data


def write_profile(path: str | Path, profile: dict[str, Any]) -> None:
    """Write a profile (the format key first); the file is checked by reading it back."""
    out = {FORMAT_KEY: FORMAT_VERSION, **{k: v for k, v in profile.items() if k != FORMAT_KEY}}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(_plain(out), sort_keys=False, width=110), encoding="utf-8")
    read_profile(p)


def _plain(x):
    """numpy scalars and tuples as plain YAML values."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, str):
        return str(x)           # str subclasses (torch's version string) as plain text
    if hasattr(x, "item"):
        return x.item()
    return x


def _names(e: dict) -> set[str]:
    return {str(e["id"]).lower(), *(str(a).lower() for a in e.get("aliases", []) or [])}


def pick_gpu(profile: dict, gpu: Optional[str], path="profile", threads: Optional[int] = None) -> dict:
    """The profile's GPU entry for ``--gpu`` (id or alias), else the one measured at ``threads`` (CPU
    entries record their thread count in the fits), else the first. ``--gpu`` naming a device the profile
    did not measure is an error."""
    entries = profile["gpus"]
    if gpu:
        for e in entries:
            if gpu.strip().lower() in _names(e):
                return e
        have = ", ".join(e["id"] for e in entries)
        raise UserError(f"hardware profile {path} measured {have}, not --gpu {gpu}; calibrate on that GPU "
                        f"(`megacluster calibrate --gpu {gpu}`) or drop --gpu")
    if threads is not None:
        for e in entries:
            if (profile.get("fits") or {}).get(e["id"], {}).get("threads") == threads:
                return e
    return entries[0]


def use_hardware(path: Optional[str | Path], gpu: Optional[str] = None, threads: Optional[int] = None
                 ) -> Optional[str]:
    """Put a profile's entries in place of the catalog's for this process and return the device id to plan
    for (``gpu`` if given and measured, else the profile's device). Without ``path``: ``gpu`` unchanged."""
    if not path:
        return gpu
    profile = read_profile(path)
    entry = pick_gpu(profile, gpu, path, threads)
    for kind in ("gpus", "fabrics", "stacks"):
        catalog.use_entries(kind, profile.get(kind) or [])
    return gpu or entry["id"]


def profile_fabric(path: Optional[str | Path]) -> Optional[str]:
    """The fabric id a profile measured (its first fabric entry), if any."""
    if not path:
        return None
    fabrics = read_profile(path).get("fabrics") or []
    return fabrics[0]["id"] if fabrics else None
