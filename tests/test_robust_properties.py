"""Property-based robustness of every command and every user-file reader (issue 21).

Hypothesis drives each command's options with generated values (0, negative, NaN, infinities, huge and
tiny numbers, words, empty text) and each reader (plans, runs files, model configs, sites, reliability
profiles) with generated and hostile YAML/JSON, and checks the promise of the README for every one:

- exit 0, and with ``--json`` one object that a strict parser reads (no NaN, no Infinity); or
- exit 2 with exactly one line ``error: ...`` on stderr and no traceback;
- and never a hang: a watchdog fails the example after ``WATCHDOG_S`` seconds.

Commands run in-process (``megacluster.cli.main``). The number of examples is bounded for CI (``FUZZ_EXAMPLES``
per property, from the environment variable ``MEGACLUSTER_FUZZ_EXAMPLES``, default 12) and the examples
are derandomised, so CI runs the same ones every time; raise the variable to search harder locally.
(``train`` is left to the runtime's own tests.)
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import signal
import tempfile
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from megacluster import catalog, cli  # noqa: E402

FUZZ_EXAMPLES = int(os.environ.get("MEGACLUSTER_FUZZ_EXAMPLES", "12"))
WATCHDOG_S = 60          # a hang detector, not a speed target: each example takes well under a second or two
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


class Hung(Exception):
    pass


def _alarm(signum, frame):
    raise Hung(f"a command ran longer than {WATCHDOG_S} s")


def _strict_json(text: str):
    def refuse(name):
        raise AssertionError(f"{name} in --json output")

    return json.loads(text, parse_constant=refuse)


def run(argv: list[str]) -> tuple[int, str, str]:
    """Run ``megacluster ARGV`` in-process and check the promise; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(WATCHDOG_S)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main(list(argv))
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    o, e = out.getvalue(), err.getvalue()
    assert "Traceback" not in o + e, (argv, e[-2000:])
    assert code in (0, 2), (argv, code, e[-2000:])
    if code == 2:
        lines = [ln for ln in e.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, e[-2000:])
        assert len(lines[0]) < 1000, (argv, lines[0][:300])
    elif "--json" in argv:
        _strict_json(o)
        assert o.count("\n") == 1, (argv, o[:300])
    else:
        assert o.strip(), argv
    return code, o, e


# ------------------------------------------------------------------------------------------------ values
SPECIAL = ["0", "-1", "-0", "nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e999", "1e-320", "5e-324",
           "99999999999999999999", "1e20", "1e9", "10000001", "0.5", "1.5", "1e-9", "abc", "", " ", "0x10", "1_000",
           "8" * 400]
NUMBER_TEXT = st.one_of(
    st.sampled_from(SPECIAL),
    st.integers(-10 ** 25, 10 ** 25).map(str),
    st.integers(0, 70_000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=0, max_value=1e6).map(repr),
)
WORD = st.one_of(st.sampled_from(["", " ", "H100", "ib", "NeMo", "x" * 300, "../../etc/passwd", "None", "null",
                                  "\u00e9\u00e8", "bf16", "fp8", "rowwise", "full", "selective"]),
                 st.text(max_size=20))


def _options(table: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """One to three options of a command with generated values."""
    return st.lists(st.sampled_from(sorted(table)), min_size=1, max_size=3, unique=True).flatmap(
        lambda names: st.tuples(*[st.tuples(st.just(n), table[n]) for n in names]))


def _argv(base: list[str], opts) -> list[str]:
    argv = list(base)
    for name, value in opts:
        if name in argv:                       # replace the base's value
            i = argv.index(name)
            argv[i + 1] = value
        else:
            argv += [name, value]
    return argv


ESTIMATE = ["estimate", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--gpus", "8", "--zero", "3"]
ESTIMATE_OPTS = {k: NUMBER_TEXT for k in ("--gpus", "--tp", "--pp", "--dp", "--cp", "--ep", "--vp", "--micro-batch",
                                          "--global-batch", "--seq-len", "--zero", "--nic-gbps", "--nics-per-node",
                                          "--gpus-per-node")}
ESTIMATE_OPTS.update({k: WORD for k in ("--recompute", "--precision", "--fabric", "--framework", "--fp8-recipe",
                                        "--model", "--gpu")})

PLAN = ["plan", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--gpus", "8", "--global-batch", "64", "--top", "2"]
PLAN_OPTS = {k: NUMBER_TEXT for k in ("--gpus", "--global-batch", "--seq-len", "--top", "--tp", "--pp",
                                      "--micro-batch", "--zero", "--headroom", "--nic-gbps", "--tokens-per-step")}
PLAN_OPTS["--sweep-gpus"] = st.lists(NUMBER_TEXT, min_size=1, max_size=3).map(",".join)
PLAN_OPTS["--precision"] = WORD

CAMPAIGN = ["campaign", "--model", "llama3.1-8b", "--tokens", "1T", "--gpu", "h100-sxm", "--gpus", "64",
            "--trials", "3"]
CAMPAIGN_OPTS = {k: NUMBER_TEXT for k in ("--gpus", "--pue", "--mfu", "--goodput", "--grid-gco2-per-kwh",
                                          "--electricity-usd-per-kwh", "--wue-l-per-kwh", "--gpu-price-usd",
                                          "--cloud-usd-per-gpu-hour", "--seq-len", "--global-batch", "--nic-gbps",
                                          "--gpus-per-node", "--trials")}
CAMPAIGN_OPTS["--tokens"] = st.one_of(NUMBER_TEXT, st.tuples(NUMBER_TEXT, st.sampled_from("kKmMbBtTpP")).map(
    "".join))
CAMPAIGN_OPTS["--set"] = st.tuples(st.sampled_from(["pue", "mfu", "goodput", "gpu_tdp_w", "bogus", ""]),
                                   NUMBER_TEXT).map("=".join)
CAMPAIGN_OPTS["--site"] = WORD

RELIABILITY = ["reliability", "--gpus", "1024", "--days", "10", "--trials", "5"]
RELIABILITY_OPTS = {k: NUMBER_TEXT for k in ("--gpus", "--days", "--trials", "--checkpoint-interval", "--spares",
                                             "--weibull-shape", "--burst-fraction", "--burst-mean-minutes",
                                             "--detect-minutes", "--restart-minutes", "--repair-hours",
                                             "--write-gbs", "--stall-seconds", "--rate-scale", "--step-seconds",
                                             "--seed")}
RELIABILITY_OPTS.update({k: WORD for k in ("--distribution", "--checkpoint-mode", "--precision", "--profile",
                                           "--model")})


@FUZZ
@given(opts=_options(ESTIMATE_OPTS), as_json=st.booleans())
def test_estimate_options(opts, as_json):
    run(_argv(ESTIMATE, opts) + (["--json"] if as_json else []))


@FUZZ
@given(opts=_options(PLAN_OPTS), as_json=st.booleans())
def test_plan_options(opts, as_json):
    argv = _argv(PLAN, opts)
    if "--sweep-gpus" in argv:                    # a sweep takes no --gpus
        i = argv.index("--gpus")
        del argv[i:i + 2]
    run(argv + (["--json"] if as_json else []))


@FUZZ
@given(opts=_options(CAMPAIGN_OPTS))
def test_campaign_options(opts):
    run(_argv(CAMPAIGN, opts) + ["--json"])


@FUZZ
@given(opts=_options(RELIABILITY_OPTS), as_json=st.booleans())
def test_reliability_options(opts, as_json):
    run(_argv(RELIABILITY, opts) + (["--json"] if as_json else []))


@FUZZ
@given(kind=st.one_of(st.sampled_from(["gpus", "GPUs", "models", "fabrics", "stacks", "bogus"]), WORD),
       entry=st.one_of(st.none(), WORD, st.sampled_from(["H100-SXM", "ib", "NeMo", "llama3.1-8b", "h100"])),
       as_json=st.booleans())
def test_catalog_names(kind, entry, as_json):
    run(["catalog", kind] + ([entry] if entry is not None else []) + (["--json"] if as_json else []))


# ------------------------------------------------------------------------------------------------ user files
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-10 ** 30, 10 ** 30), st.integers(-3, 70_000),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
VALUE = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                     max_leaves=12)

HOSTILE = [
    b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    b"e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
    b"g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: [*g, *g, *g, *g, *g, *g, *g, *g, *g]\n",
    b"[" * 3000 + b"]" * 3000,
    b"{" * 200, b"\xff\xfe\x00garbage", "caf\xe9: 1\n".encode("latin-1"), b"", b"\x00" * 64,
    b"--- !!python/object:os.system x",
    b"a: !!binary AAAA\n", b"runs: .nan\n", b"runs: [.inf]\n", b"model: 1e400\n", b"{\"a\": NaN}", b"{\"a\": 1e400}",
    b"key: 2001-12-14t21:59:43.10-05:00\n", b"? [1, 2]\n: x\n", b"- " * 500, b"a: " + b"9" * 5000 + b"\n",
]
FILE_TEXT = st.one_of(
    st.sampled_from(HOSTILE),
    VALUE.map(lambda v: yaml.safe_dump(v).encode()),
    VALUE.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)
READERS = {
    "plan": lambda f: ["estimate", "--plan", f, "--json"],
    "runs": lambda f: ["validate", "--runs", f, "--json"],
    "model": lambda f: ["estimate", "--model", f, "--gpu", "h100-sxm", "--gpus", "8", "--zero", "3", "--json"],
    "site": lambda f: ["campaign", "--model", "llama3.1-8b", "--tokens", "1T", "--gpu", "h100-sxm", "--gpus", "64",
                       "--no-failures", "--site", f, "--json"],
    "profile": lambda f: ["reliability", "--gpus", "1024", "--days", "10", "--trials", "3", "--profile", f,
                          "--json"],
}


@FUZZ
@given(reader=st.sampled_from(sorted(READERS)), content=FILE_TEXT, suffix=st.sampled_from([".yaml", ".json"]))
def test_every_reader_with_generated_and_hostile_files(reader, content, suffix):
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / ("config.json" if reader == "model" and suffix == ".json" else f"input{suffix}")
        f.write_bytes(content)
        run(READERS[reader](str(f)))


def _mutate(target: dict, path: list[str], value) -> None:
    for k in path[:-1]:
        if not isinstance(target.get(k), dict):
            target[k] = {}
        target = target[k]
    target[path[-1]] = value


RUN_KEYS = ([["model", k] for k in ("name", "n_layers", "d_model", "n_heads", "n_kv_heads", "ffn_hidden", "vocab",
                                    "seq_len", "mlp", "moe", "mla")] +
            [["spec", k] for k in ("gpu", "n_gpus", "tp", "pp", "dp", "cp", "ep", "vp", "micro_batch", "global_batch",
                                   "seq_len", "zero", "fabric", "precision", "recompute", "stack", "nic_gbps",
                                   "gpus_per_node", "sequence_parallel")] +
            [["spec", "stack", k] for k in ("framework", "compile", "fp8_recipe")] +
            [["reference", "tokens_per_s_per_gpu"], ["measured"], ["id"], ["spec"], ["model"]])


@FUZZ
@given(changes=st.lists(st.tuples(st.sampled_from(RUN_KEYS), VALUE), min_size=1, max_size=3))
def test_validate_with_a_mutated_run(changes):
    runs = catalog.load("runs")["runs"]
    good = copy.deepcopy(next(r for r in runs if r["id"] == "nemo2407-llama3-70b-64gpu-fp8"))
    bad = copy.deepcopy(good)
    bad["id"] = "mutated"
    for path, value in changes:
        _mutate(bad, path, value)
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "runs.yaml"
        try:
            f.write_text(yaml.safe_dump({"runs": [good, bad]}))
        except yaml.YAMLError:
            return
        code, out, err = run(["validate", "--runs", str(f), "--json"])
    assert code == 0, err                           # the good run is always predicted
    assert [r["id"] for r in _strict_json(out)["runs"]][:1] == ["nemo2407-llama3-70b-64gpu-fp8"]


PLAN_KEYS = ([[k] for k in ("model", "gpu", "gpus", "fabric", "nic_gbps", "nics_per_node", "gpus_per_node",
                            "nvlink_domain", "layout", "stack", "predicted", "extra")] +
             [["layout", k] for k in ("tp", "pp", "dp", "cp", "ep", "vp", "micro_batch", "global_batch", "seq_len",
                                      "sequence_parallel", "recompute", "zero", "precision")] +
             [["stack", k] for k in ("framework", "compile", "async_tp", "fp8_recipe")])


@FUZZ
@given(changes=st.lists(st.tuples(st.sampled_from(PLAN_KEYS), VALUE), min_size=1, max_size=3))
def test_estimate_with_a_mutated_plan(changes):
    plan = {"model": "llama3.1-8b", "gpu": "h100-sxm", "gpus": 8, "layout": {"tp": 1, "pp": 1, "dp": 8,
            "global_batch": 64, "seq_len": 8192, "zero": 3}, "stack": {"framework": "megatron"}}
    for path, value in changes:
        _mutate(plan, path, value)
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "plan.yaml"
        try:
            f.write_text(yaml.safe_dump(plan))
        except yaml.YAMLError:
            return
        run(["estimate", "--plan", str(f), "--json"])
