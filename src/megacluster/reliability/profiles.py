"""Reliability profiles: a fleet's failure rates by component, its recovery times and checkpoint storage.

Profiles live in ``catalog/data/reliability.yaml``; a user's own YAML/JSON file with the same layout (one
profile, or a ``profiles:`` list holding one) is loaded by path. Every value carries its ``source``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .. import catalog
from ..errors import UserError, unknown_name

Per = Literal["gpu", "node", "job"]
Group = Literal["gpu", "host", "network", "software", "planned", "other"]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Sourced(_M):
    """A number with where it comes from."""

    value: float
    source: str = Field(min_length=1)


class SourcedText(_M):
    value: str
    source: str = Field(min_length=1)


class Observed(_M):
    """The exposure over which a profile's ``count`` values were seen."""

    gpus: int = Field(gt=0)
    days: float = Field(gt=0)
    source: str = Field(min_length=1)


class Component(_M):
    """One failure cause. Rate per device-hour of wall-clock time, the device named by ``per``."""

    id: str
    name: str
    group: Group
    per: Per = "gpu"
    hardware: bool = False
    planned: bool = False
    count: Optional[float] = Field(None, ge=0, description="interruptions seen over the profile's exposure")
    rate_per_device_hour: Optional[float] = Field(None, ge=0)
    source: str = Field(min_length=1)

    @model_validator(mode="after")
    def _one_rate(self) -> "Component":
        if (self.count is None) == (self.rate_per_device_hour is None):
            raise ValueError("give exactly one of count or rate_per_device_hour")
        return self


class Anchor(_M):
    """A published mean time to failure at one job size, used to check the profile."""

    gpus: int = Field(gt=0)
    mttf_hours: float = Field(gt=0)
    kind: Literal["measured", "projected"] = "measured"
    source: str = Field(min_length=1)


class Recovery(_M):
    detect_minutes: Sourced
    restart_minutes: Sourced
    repair_hours: Sourced


class Storage(_M):
    write_gbs: Sourced
    read_gbs: Sourced
    node_gbs: Sourced
    host_copy_gbs: Sourced
    peer_gbs: Sourced


class CheckpointDefaults(_M):
    params: Sourced
    mode: SourcedText


class Distribution(_M):
    """Distribution of the time from a restart to the next interruption (renewed at every restart)."""

    kind: Literal["exponential", "weibull", "bursty"] = "exponential"
    weibull_shape: float = Field(0.7, ge=0.1, le=10,
                                 description="Weibull shape k (k < 1: failures cluster after restarts)")
    burst_fraction: float = Field(0.2, ge=0, lt=1, description="share of restarts followed by a quick re-failure")
    burst_mean_minutes: float = Field(30.0, gt=0, description="mean time to the quick re-failure")
    source: str = ""


class Profile(_M):
    id: str
    name: str
    source: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    gpus_per_node: int = Field(8, gt=0)
    observed: Optional[Observed] = None
    components: list[Component] = Field(min_length=1)
    anchors: list[Anchor] = Field(default_factory=list)
    recovery: Recovery
    storage: Storage
    checkpoint: CheckpointDefaults
    distribution: Distribution = Distribution()

    @model_validator(mode="after")
    def _counts_need_exposure(self) -> "Profile":
        if any(c.count is not None for c in self.components) and self.observed is None:
            raise ValueError("components given as `count` need an `observed: {gpus, days, source}` exposure")
        ids = [c.id for c in self.components]
        if len(set(ids)) != len(ids):
            raise ValueError("component ids must be unique")
        return self

    def rate_per_device_hour(self, c: Component) -> float:
        """The component's rate per device-hour (device = GPU, node or job as ``c.per`` says)."""
        if c.rate_per_device_hour is not None:
            return c.rate_per_device_hour
        o = self.observed
        devices = {"gpu": o.gpus, "node": o.gpus / self.gpus_per_node, "job": 1.0}[c.per]
        return c.count / (devices * o.days * 24.0)


def _validate(data: object, what: str) -> Profile:
    if isinstance(data, dict) and "profiles" in data:
        items = data["profiles"]
        if not isinstance(items, list) or len(items) != 1:
            raise UserError(f"{what}: a profile file holds one profile (a mapping, or `profiles:` with one entry)")
        data = items[0]
    if not isinstance(data, dict):
        raise UserError(f"{what}: a reliability profile must be a mapping with id, name, components, ...")
    try:
        return Profile(**data)
    except ValidationError as e:
        raise UserError(catalog.validation_message(e, what)) from None


def profile_names() -> list[str]:
    """Ids of the profiles in the catalog."""
    return sorted(p["id"] for p in catalog.load("reliability")["profiles"])


def load_profile(profile: "str | Path | Profile | dict" = "llama3-h100") -> Profile:
    """A reliability profile by catalog id or alias, from a YAML/JSON file path, or from a mapping."""
    if isinstance(profile, Profile):
        return profile
    if isinstance(profile, dict):
        return _validate(profile, "reliability profile")
    name = str(profile)
    if isinstance(profile, Path) or name.endswith((".yaml", ".yml", ".json")) or "/" in name:
        return _validate(catalog.read_yaml_or_json(name, "reliability profile"), str(name))
    entries: dict[str, dict] = {}
    for e in catalog.load("reliability")["profiles"]:
        entries[e["id"]] = e
        for a in e.get("aliases", []) or []:
            entries[a] = e
    if name not in entries:
        hint = str(unknown_name("reliability profile", name, entries)).split(" (`megacluster")[0]
        raise UserError(f"{hint}; known: {', '.join(profile_names())}, or a profile YAML file path")
    return _validate(entries[name], f"reliability profile {name}")
