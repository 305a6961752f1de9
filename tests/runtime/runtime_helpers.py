"""Helpers for the runtime tests: tiny configurations, CLI calls, subprocess and torchrun launches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

#: flags of the tiny CPU model used by the subprocess tests
TINY = ["--steps", "5", "--global-batch", "8", "--micro-batch", "2", "--seq-len", "64", "--log-every", "1"]


def env() -> dict:
    e = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    e.pop("WORLD_SIZE", None)
    e.pop("RANK", None)
    return e


def cli(args: list[str], nproc: int = 1, timeout: int = 240) -> subprocess.CompletedProcess:
    """``megacluster train ARGS`` in a new process (under torchrun --standalone when nproc > 1)."""
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "megacluster.cli", "train", *args]
    else:
        cmd = [sys.executable, "-m", "megacluster.cli", "train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=timeout)


def losses(path: Path) -> dict[int, float]:
    """step -> loss from a metrics JSONL file (later lines win, as after a resume). The file may be read while
    a run appends to it, so text after the last newline (a record still being written) is not a record."""
    out = {}
    text = Path(path).read_text()
    for line in text[:text.rfind("\n") + 1].splitlines():
        r = json.loads(line)
        if "event" not in r:
            out[r["step"]] = r["loss"]
    return out


def tiny_config(tmp_path: Path | None = None, **kw):
    """A TrainConfig for the tiny model (fp32, CPU) with ``kw`` overriding fields (layout fields too)."""
    from megacluster.runtime.config import TINY as SPEC, TrainConfig
    from megacluster.specs import Layout

    lay = {"tp": 1, "dp": 1, "micro_batch": 2, "global_batch": 8, "seq_len": 64, "recompute": "none", "zero": 3}
    for k in list(kw):
        if k in Layout.model_fields and k != "precision":
            lay[k] = kw.pop(k)
    kw.setdefault("model", SPEC)
    kw.setdefault("steps", 5)
    kw.setdefault("device", "cpu")
    kw.setdefault("log_every", 1000)
    if tmp_path is not None:
        kw.setdefault("metrics", tmp_path / "metrics.jsonl")
    return TrainConfig(layout=Layout(**lay), **kw)


def train_error(capsys, *args) -> str:
    """The one error line ``megacluster train ARGS`` exits 2 with (no traceback, no second line)."""
    import pytest

    from megacluster.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err
