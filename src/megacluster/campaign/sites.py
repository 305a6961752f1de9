"""Sites: grid carbon intensity, electricity price, PUE and water figures of where a campaign runs.

Named sites live in ``catalog/data/sites.yaml``; a user's site is a YAML/JSON file of the same shape (one site
mapping). Each figure is ``{value: number, source: text}`` (a bare number is accepted; its source is then the
file it came from).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import catalog
from ..errors import UserError, short, unknown_name
from .assumptions import Assumption

SITE_KEYS = {
    "grid_gco2_per_kwh": "gCO2e/kWh",
    "electricity_usd_per_kwh": "USD/kWh",
    "pue": "ratio",
    "wue_l_per_kwh": "L/kWh IT",
    "grid_water_l_per_kwh": "L/kWh",
}


def site_names() -> list[str]:
    return sorted(s["id"] for s in catalog.load("sites")["sites"])


def _parse(entry: dict[str, Any], where: str) -> tuple[str, dict[str, Assumption]]:
    if not isinstance(entry, dict):
        raise UserError(f"{where}: a site must be a mapping with keys {', '.join(SITE_KEYS)}")
    missing = [k for k in SITE_KEYS if k not in entry]
    if missing:
        raise UserError(f"{where}: site is missing {', '.join(missing)} (each as {{value: ..., source: ...}})")
    out: dict[str, Assumption] = {}
    for key, unit in SITE_KEYS.items():
        raw = entry[key]
        if isinstance(raw, dict):
            value, source = raw.get("value"), raw.get("source") or where
        else:
            value, source = raw, where
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: {key} must be a number, got {short(value)}")
        if value < 0 or (key == "pue" and value < 1):
            raise UserError(f"{where}: {key} = {value} is impossible ({'>= 1' if key == 'pue' else '>= 0'})")
        out[key] = Assumption(value=float(value), unit=unit, source=str(source).strip())
    return str(entry.get("id") or entry.get("name") or where), out


def load_site(name: str) -> tuple[str, dict[str, Assumption]]:
    """A site by id from the catalog, or from a YAML/JSON file path. Returns (site id, figures)."""
    if name.endswith((".yaml", ".yml", ".json")) or "/" in name or Path(name).is_file():
        data = catalog.read_yaml_or_json(name, "site file")
        if isinstance(data, dict) and "sites" in data:
            sites = data["sites"]
            if not isinstance(sites, list) or len(sites) != 1:
                raise UserError(f"{name}: a site file holds one site (got {len(sites) if isinstance(sites, list) else 0})")
            data = sites[0]
        return _parse(data, name)
    entries = {s["id"]: s for s in catalog.load("sites")["sites"]}
    if name not in entries:
        e = unknown_name("site", name, entries)
        raise UserError(str(e).replace("`megacluster catalog` lists", "`megacluster catalog sites` lists"))
    sid, figs = _parse(entries[name], f"site {name}")
    return name, figs
