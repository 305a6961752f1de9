"""Checkpoints: atomic writes, verification, fallback past corrupted ones, exact resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from megacluster.errors import UserError
from megacluster.runtime import checkpoint as C
from runtime_helpers import env, losses, tiny_config

torch = pytest.importorskip("torch")
from megacluster.runtime.train import run  # noqa: E402


@pytest.fixture(scope="module")
def three_checkpoints(tmp_path_factory):
    """A 6-step run with checkpoints at steps 2, 4 and 6 (and its losses)."""
    d = tmp_path_factory.mktemp("ck")
    run(tiny_config(d, steps=6, checkpoint_dir=d / "ck", checkpoint_every=2))
    return d


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_checkpoints_are_complete_and_verified(three_checkpoints):
    found = C.list_checkpoints(three_checkpoints / "ck")
    assert [s for s, _ in found] == [6, 4, 2]
    for _, p in found:
        manifest, why = C.verify(p)
        assert why == "" and manifest["state"]["data"]["consumed"] == 8 * manifest["step"]
        assert {".metadata", "rank_00000.pt"} <= set(manifest["files"])
    assert not list((three_checkpoints / "ck").glob(".tmp-*"))


@pytest.mark.parametrize("damage, why", [
    ("truncate", "is truncated or altered"),
    ("flip", "fails its SHA-256 checksum"),
    ("manifest", "no manifest (unfinished write)"),
    ("delete", "is missing"),
])
def test_damaged_checkpoint_is_detected_and_the_previous_one_used(three_checkpoints, tmp_path, damage, why):
    root = _copy(three_checkpoints / "ck", tmp_path / "ck")
    newest = root / "step_00000006"
    shard = next(newest.glob("*.distcp"))
    if damage == "truncate":
        data = shard.read_bytes()
        shard.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        data = bytearray(shard.read_bytes())
        data[len(data) // 3] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif damage == "manifest":
        (newest / C.MANIFEST).unlink()
    else:
        shard.unlink()
    said = []
    path, manifest = C.find_resumable(root, log=said.append)
    assert path.name == "step_00000004" and manifest["step"] == 4
    assert len(said) == 1 and "step_00000006 is not usable" in said[0] and why in said[0]
    with pytest.raises(UserError, match=why.split(" (")[0]):
        C.resolve_resume(str(newest), None)
    # training with --resume auto continues from step 4 and reproduces the original steps 5 and 6
    run(tiny_config(tmp_path, steps=6, checkpoint_dir=root, resume="auto"))
    assert losses(tmp_path / "metrics.jsonl") == {s: v for s, v in losses(three_checkpoints / "metrics.jsonl")
                                                   .items() if s > 4}


def test_interrupted_write_is_never_taken_for_a_checkpoint(tmp_path):
    root = tmp_path / "ck"
    (root / ".tmp-step_00000009").mkdir(parents=True)
    (root / ".tmp-step_00000009" / "__0_0.distcp").write_bytes(b"partial")
    (root / "step_00000008").mkdir()
    (root / "step_00000008" / "__0_0.distcp").write_bytes(b"no manifest yet")
    said = []
    assert C.find_resumable(root, log=said.append) is None
    assert C.list_checkpoints(root) == [(8, root / "step_00000008")]
    assert C.resolve_resume("auto", root, log=said.append) is None
    assert "no valid checkpoint" in said[-1] and "starting from step 0" in said[-1]


def test_other_model_shape_is_refused(three_checkpoints, tmp_path):
    from megacluster.runtime.config import TINY as SPEC

    root = _copy(three_checkpoints / "ck", tmp_path / "ck")
    with pytest.raises(UserError, match="different model shape"):
        run(tiny_config(tmp_path, steps=8, checkpoint_dir=root, resume="auto",
                        model=SPEC.model_copy(update={"n_layers": 3})))


def test_keep_prunes_old_checkpoints(tmp_path):
    run(tiny_config(tmp_path, steps=4, checkpoint_dir=tmp_path / "ck", checkpoint_every=1, keep=2))
    assert [s for s, _ in C.list_checkpoints(tmp_path / "ck")] == [4, 3]


def test_sigkill_then_resume_auto_continues_the_same_loss_curve(tmp_path):
    """Kill -9 a run after step 12 (checkpoints every 5 steps), resume with --resume auto: the losses of steps
    11..40 equal those of an uninterrupted run exactly (same process layout, fp32, one thread)."""
    steps = ["--steps", "40", "--checkpoint-every", "5", "--seq-len", "64", "--global-batch", "8",
             "--micro-batch", "4", "--device", "cpu", "--log-every", "100"]
    ref = tmp_path / "ref.jsonl"
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "megacluster.cli", "train", *steps, "--checkpoint-dir", str(run_dir / "ck"),
           "--metrics", str(run_dir / "m.jsonl")]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env())
    deadline = time.time() + 180
    while time.time() < deadline:
        m = run_dir / "m.jsonl"
        if m.exists() and max(losses(m), default=0) >= 12:
            break
        if p.poll() is not None:
            break
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = max(losses(run_dir / "m.jsonl"))
    assert 12 <= killed_at < 40
    r = subprocess.run(cmd + ["--resume", "auto"], capture_output=True, text=True, env=env(), timeout=180)
    assert r.returncode == 0, r.stderr
    assert "resumed from" in r.stdout
    starts = [json.loads(x) for x in (run_dir / "m.jsonl").read_text().splitlines() if '"event": "start"' in x]
    assert starts[-1]["resumed_at"] in (10, 15, 20, 25, 30, 35) and starts[-1]["resumed_at"] <= killed_at
    # the uninterrupted reference, in this process
    from megacluster.cli import main

    main(["train", *steps, "--metrics", str(ref)])
    got, want = losses(run_dir / "m.jsonl"), losses(ref)
    assert sorted(got) == list(range(1, 41))
    assert got == want


def test_metrics_log_cuts_a_torn_record_before_it_appends(tmp_path):
    """A run killed in the middle of writing a metrics line leaves half a record; the resumed run cuts it off
    instead of gluing its first record onto it, and every line stays one JSON object."""
    from megacluster.runtime.metrics import MetricsLog

    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    log = MetricsLog(path, enabled=True)
    log.write({"step": 2, "loss": 1.5})
    log.close()
    assert [json.loads(x) for x in path.read_text().splitlines()] == [{"step": 1, "loss": 2.0},
                                                                      {"step": 2, "loss": 1.5}]
    whole = path.read_text()
    MetricsLog(path, enabled=True).close()                     # a file that ends in a newline is kept as is
    assert path.read_text() == whole
    torn_only = tmp_path / "t.jsonl"
    torn_only.write_text('{"step": 1')
    MetricsLog(torn_only, enabled=True).close()
    assert torn_only.read_text() == ""


def _children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux /proc)."""
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="finds the workers through Linux /proc")
def test_sigkill_of_every_torchrun_worker_then_resume_auto(tmp_path):
    """A 2-process FSDP job under torchrun: kill -9 both workers and the launcher after step 5 (checkpoints
    every 2 steps), relaunch with --resume auto: the losses of every step equal those of one uninterrupted
    process (to 1e-5: FSDP reduces in another order)."""
    from runtime_helpers import TINY

    steps = [*TINY, "--steps", "10", "--checkpoint-every", "2", "--dp", "2", "--device", "cpu"]
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "megacluster.cli", "train", *steps, "--checkpoint-dir", str(run_dir / "ck"),
           "--metrics", str(run_dir / "m.jsonl")]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(),
                         start_new_session=True)
    deadline = time.time() + 240
    workers: list[int] = []
    while time.time() < deadline and p.poll() is None:
        workers = _children(p.pid) or workers
        m = run_dir / "m.jsonl"
        if m.exists() and max(losses(m), default=0) >= 5:
            break
        time.sleep(0.01)
    assert p.poll() is None, "the job finished before it could be killed"
    workers = _children(p.pid)
    assert len(workers) == 2
    for w in workers:
        os.kill(w, signal.SIGKILL)
    p.send_signal(signal.SIGKILL)
    p.wait()
    killed_at = max(losses(run_dir / "m.jsonl"))
    assert 5 <= killed_at < 10
    r = subprocess.run(cmd + ["--resume", "auto"], capture_output=True, text=True, env=env(), timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from" in r.stdout
    ref = tmp_path / "ref.jsonl"
    from megacluster.cli import main

    main(["train", *TINY, "--steps", "10", "--device", "cpu", "--metrics", str(ref)])
    got, want = losses(run_dir / "m.jsonl"), losses(ref)
    assert sorted(got) == list(range(1, 11))
    for s, v in got.items():
        assert v == pytest.approx(want[s], rel=1e-5), (s, v, want[s])
