"""Tables of the catalog (``megacluster catalog``): ids, key figures and sources."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .. import catalog
from ..errors import unknown_name
from .tables import fmt_params, kv_table

KINDS = ("gpus", "models", "fabrics", "stacks", "scenarios", "sites")


def short_source(text: str, limit: int = 100) -> str:
    """A source cut to at most ``limit`` characters at a word boundary."""
    text = " ".join(str(text or "").split())
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " …"


def entries(kind: str) -> list[dict[str, Any]]:
    kind = str(kind).strip().lower()
    if kind not in KINDS:
        raise unknown_name("catalog kind", kind, KINDS)
    return list(catalog.load(kind)[kind])


def _table(title: str, columns: list[tuple[str, str]]) -> Table:
    t = Table(title=title, title_justify="left")
    for name, just in columns:
        t.add_column(name, justify=just, no_wrap=name == "id")
    return t


def sources(rows: list[tuple[str, str]], full: bool) -> Text:
    """``id: source`` lines under a table (the first sentence of each, or in full)."""
    out = Text("sources\n", style="bold")
    for entry_id, src in rows:
        out.append(f"  {entry_id}", style="bold")
        out.append(f": {' '.join(str(src).split()) if full else short_source(src)}\n")
    return out


def gpus_table(full: bool = False) -> Group:
    t = _table("accelerators", [("id", "left"), ("generation", "left"), ("bf16 TFLOP/s", "right"),
                                ("fp8 TFLOP/s", "right"), ("HBM GiB", "right"), ("HBM TB/s", "right"),
                                ("NVLink GB/s", "right"), ("TDP W", "right"), ("price $", "right")])
    src = []
    for e in entries("gpus"):
        g = catalog.gpu(e["id"])
        fp8 = g.peak_tflops.get("fp8")
        bf16 = g.peak_tflops.get("bf16")
        half = f"{bf16:g}" if bf16 else f"{g.peak('fp16') / 1e12:g} (fp16)"
        t.add_row(g.id, g.generation, half, f"{fp8:g}" if fp8 else "-",
                  f"{g.hbm_gib:g}", f"{g.hbm_tbs:g}", f"{g.nvlink_gbs:g}", f"{g.tdp_w:g}", f"{g.price_usd:,.0f}")
        src.append((g.id, g.source))
    return Group(t, sources(src, full))


def models_table(full: bool = False) -> Group:
    t = _table("models", [("id", "left"), ("params", "right"), ("active", "right"), ("layers", "right"),
                          ("d_model", "right"), ("heads/kv", "right"), ("ffn", "right"), ("vocab", "right"),
                          ("seq", "right"), ("MoE", "left")])
    src = []
    for e in entries("models"):
        m = catalog.model(e["id"])
        moe = f"{m.moe.n_experts} x top-{m.moe.top_k}" if m.moe else ""
        t.add_row(e["id"], fmt_params(m.params_total), fmt_params(m.params_active), str(m.n_layers),
                  str(m.d_model), f"{m.n_heads}/{m.kv_heads}", str(m.ffn_hidden), str(m.vocab), str(m.seq_len), moe)
        aliases = e.get("aliases") or []
        src.append((e["id"] + (f" ({', '.join(aliases)})" if aliases else ""), m.source))
    return Group(t, sources(src, full))


def fabrics_table(full: bool = False) -> Group:
    t = _table("fabrics", [("id", "left"), ("kind", "left"), ("efficiency", "right"), ("latency us", "right"),
                           ("switch tiers: reach in GPUs, oversubscription", "left")])
    src = []
    for e in entries("fabrics"):
        f = catalog.fabric(e["id"])
        tiers = ", ".join(f"{x.name} {x.reach_gpus:,} {x.oversubscription:g}:1" for x in f.tiers)
        t.add_row(f.id, f.kind, f"{f.efficiency:.0%}", f"{f.base_latency_us:g}", tiers)
        src.append((f.id, f.source))
    return Group(t, sources(src, full))


def stacks_table(full: bool = False) -> Group:
    t = _table("software stacks", [("id", "left"), ("generation", "left"), ("attention", "left"),
                                   ("TP overlap", "left"), ("DP overlap", "left"), ("schedule", "left")])
    src = []
    for e in entries("stacks"):
        for gen, c in e["by_generation"].items():
            tp = c.get("tp_overlap", "-") + (f" (async: {c['async_tp_overlap']})" if "async_tp_overlap" in c else "")
            t.add_row(e["id"], gen, str(c.get("attention", "-")), tp, str(c.get("dp_overlap", "-")),
                      str(c.get("schedule", "-")))
        src.append((e["id"], e.get("source", "")))
    return Group(t, sources(src, full))


def scenarios_table(full: bool = False) -> Group:
    """Named scenarios: campaigns (`megacluster campaign --scenario ID`) and sizing questions (`megacluster size
    --scenario ID`), with the published figures each is compared with."""
    t = _table("scenarios", [("id", "left"), ("run with", "left"), ("cluster or limits", "left"), ("model", "left"),
                             ("published figures compared", "left")])
    src = []
    for e in entries("scenarios"):
        if "size" in e:
            z = e["size"]
            lim = ", ".join(f"{k} {_fig(z[k]):,.4g}" for k in ("days", "max_mw", "budget_usd", "gpus") if k in z)
            t.add_row(e["id"], "size / campaign", f"{z['gpu']}: {lim}", str(z.get("model") or "largest model"),
                      ", ".join(e.get("published") or {}) or "-")
            src.append((e["id"], " ".join(f"{k}: {z[k]['source']}" for k in z if isinstance(z[k], dict))))
            continue
        c, m = e["cluster"], e["model"]
        mtxt = m if isinstance(m, str) else (m.get("name") or m.get("spec", {}).get("name", "assumed shape"))
        t.add_row(e["id"], "campaign", f"{c['gpus']:,} x {c['gpu']}", str(mtxt), ", ".join(e.get("published") or {})
                  or "-")
        src.append((e["id"], e.get("cluster_source", "")))
    return Group(t, sources(src, full))


def _fig(v: Any) -> float:
    return float(v["value"] if isinstance(v, dict) else v)


def sites_table(full: bool = False) -> Group:
    t = _table("sites", [("id", "left"), ("grid gCO2e/kWh", "right"), ("USD/kWh", "right"), ("PUE", "right"),
                         ("WUE L/kWh", "right"), ("grid water L/kWh", "right"), ("name", "left")])
    src = []
    keys = ("grid_gco2_per_kwh", "electricity_usd_per_kwh", "pue", "wue_l_per_kwh", "grid_water_l_per_kwh")
    for e in entries("sites"):
        t.add_row(e["id"], *(f"{_fig(e[k]):g}" for k in keys), str(e.get("name", "")))
        src.append((e["id"], " ".join(f"{k}: {e[k]['source']}" for k in keys if isinstance(e[k], dict))))
    return Group(t, sources(src, full))


TABLES = {"gpus": gpus_table, "models": models_table, "fabrics": fabrics_table, "stacks": stacks_table,
          "scenarios": scenarios_table, "sites": sites_table}


def find_entry(kind: str, entry_id: str) -> dict[str, Any]:
    """One catalog entry by id or alias, in any case (as ``estimate`` resolves names), else the unknown-name
    error naming the nearest."""
    by_id = {}
    for e in entries(kind):
        by_id[e["id"]] = e
        for a in e.get("aliases") or []:
            by_id[a] = e
    key = catalog._key(by_id, entry_id)
    if key not in by_id:
        raise unknown_name(kind.rstrip("s"), entry_id, by_id)
    return by_id[key]


def entry_table(kind: str, entry_id: str) -> Table:
    """Every field of one catalog entry, the source in full."""
    e = find_entry(kind, entry_id)
    rows = [(k, " ".join(str(v).split())) for k, v in e.items() if k != "source"]
    if kind == "models":
        m = catalog.model(e["id"])
        rows += [("params (counted)", f"{m.params_total:,}"), ("active params (counted)", f"{m.params_active:,}")]
    rows.append(("source", " ".join(str(e.get("source", "")).split())))
    return kv_table(f"{kind.rstrip('s')} {e['id']}", rows)
