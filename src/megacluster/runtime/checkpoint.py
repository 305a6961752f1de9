"""Atomic, verifiable checkpoints with ``torch.distributed.checkpoint`` (DCP).

Layout on disk (a directory shared by all ranks)::

    <dir>/step_00000100/        one finished checkpoint
        .metadata, *.distcp     DCP shards of model and optimizer (resharded on load: any dp x tp)
        rank_00000.pt ...       per-rank RNG state
        manifest.json           written last: step, train state, and size + SHA-256 of every other file

A checkpoint is written into ``<dir>/.tmp-step_...``; rank 0 writes the manifest only after every rank has
finished, then renames the directory into place. A crash in the middle leaves only a ``.tmp-`` directory, which
is never read (and is deleted by the next save). A checkpoint is *valid* when its manifest parses and every
file it lists has the recorded size and checksum; ``--resume auto`` takes the newest valid one and says why it
skipped any newer ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError

MANIFEST = "manifest.json"
_NAME = re.compile(r"^step_(\d{8})$")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step_{step:08d}"


def write_manifest(ckpt: Path, step: int, state: dict) -> None:
    """Checksum every file of ``ckpt`` and write the manifest last (fsynced)."""
    files = {}
    for f in sorted(ckpt.rglob("*")):
        if f.is_file() and f.name != MANIFEST:
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
            files[str(f.relative_to(ckpt))] = {"bytes": f.stat().st_size, "sha256": _sha256(f)}
    manifest = {"format": "megacluster-checkpoint-1", "step": step, "time": time.time(), "files": files,
                "state": state}
    tmp = ckpt / (MANIFEST + ".part")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, ckpt / MANIFEST)
    _fsync_dir(ckpt)


def verify(ckpt: Path) -> tuple[dict | None, str]:
    """(manifest, "") when ``ckpt`` is complete and intact, else (None, why not)."""
    m = ckpt / MANIFEST
    if not m.is_file():
        return None, "no manifest (unfinished write)"
    try:
        manifest = json.loads(m.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        return None, "manifest is unreadable"
    if not files:
        return None, "manifest lists no files"
    for rel, want in files.items():
        f = ckpt / rel
        if not f.is_file():
            return None, f"{rel} is missing"
        size = f.stat().st_size
        if size != want["bytes"]:
            return None, f"{rel} is truncated or altered ({size} bytes, expected {want['bytes']})"
        if _sha256(f) != want["sha256"]:
            return None, f"{rel} fails its SHA-256 checksum (corrupted)"
    return manifest, ""


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Finished checkpoint directories under ``root``, newest first (not yet verified)."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return sorted(out, reverse=True)


def find_resumable(root: Path, log=print) -> tuple[Path, dict] | None:
    """The newest valid checkpoint under ``root`` and its manifest; reports each invalid one it skips."""
    for step, path in list_checkpoints(root):
        manifest, why = verify(path)
        if manifest is not None:
            return path, manifest
        log(f"warning: checkpoint {path} is not usable: {why}; trying the previous one")
    return None


def resolve_resume(resume: str | None, root: Path | None, log=print) -> tuple[Path, dict] | None:
    """What ``--resume`` names: ``auto`` (the newest valid checkpoint under ``root``, or none), or a path to
    one checkpoint directory (which must be valid)."""
    if not resume:
        return None
    if resume == "auto":
        if root is None:
            raise UserError("--resume auto needs --checkpoint-dir (where to look for checkpoints)")
        found = find_resumable(root, log)
        if found is None:
            n = len(list_checkpoints(root))
            log(f"no valid checkpoint in {root}" + (f" ({n} unusable)" if n else "") + "; starting from step 0")
        return found
    path = Path(resume)
    if not path.is_dir():
        raise UserError(f"--resume {resume}: no such checkpoint directory (give a step_* directory or auto)")
    manifest, why = verify(path)
    if manifest is None:
        raise UserError(f"checkpoint {path} is not usable: {why}")
    return path, manifest


def _OPTIONS():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # optimizer state keyed by parameter name, not by position: it loads into any split of the model
    return StateDictOptions(flatten_optimizer_state_dict=True)


def _pairs(model, optimizer) -> tuple[list, list]:
    """(model parts, their optimizers): a pipeline rank holds one part per stage, each with its optimizer."""
    if isinstance(model, (list, tuple)):
        return list(model), list(optimizer)
    return [model], [optimizer]


def _state(model, optimizer) -> tuple[dict, dict]:
    """Model and optimizer state of all parts, keyed by the names in the whole model (parts are disjoint)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd: dict = {}
    osd: dict = {}
    for m, o in zip(*_pairs(model, optimizer)):
        a, b = get_state_dict(m, o, options=_OPTIONS())
        msd.update(a)
        osd.update(b)
    return msd, osd


@contextmanager
def _single_process_quiet():
    """DCP warns that it assumes a single process when no process group exists; that is this case."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


class Checkpointer:
    """Saves and loads model + optimizer (DCP), RNG state (per rank) and a JSON train state, atomically.

    ``d`` is the job's :class:`~megacluster.runtime.parallel.Dist`; all ranks call ``save`` and ``load``.
    """

    def __init__(self, root: Path, d, keep: int = 3):
        self.root = Path(root)
        self.d = d
        self.keep = keep

    def _barrier(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()

    def _broadcast(self, obj):
        import torch.distributed as dist

        if not dist.is_initialized():
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def save(self, step: int, model, optimizer, state: dict) -> Path:
        """Write checkpoint ``step`` (model, optimizer, this rank's RNG, ``state``) and return its path."""
        import torch
        import torch.distributed.checkpoint as dcp
        final = step_dir(self.root, step)
        tmp = self.root / f".tmp-{final.name}"
        if self.d.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            for old in self.root.glob(".tmp-step_*"):
                shutil.rmtree(old, ignore_errors=True)
            tmp.mkdir()
        self._barrier()
        msd, osd = _state(model, optimizer)
        with _single_process_quiet():
            dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(tmp))
        rng = {"torch": torch.get_rng_state()}
        if self.d.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.d.device)
        torch.save(rng, tmp / f"rank_{self.d.rank:05d}.pt")
        self._barrier()
        if self.d.is_main:
            write_manifest(tmp, step, state)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(self.root)
            for _, old in list_checkpoints(self.root)[self.keep:]:
                shutil.rmtree(old, ignore_errors=True)
        self._barrier()
        return final

    def find(self, resume: str | None, log=print) -> tuple[Path, dict] | None:
        """Rank 0 resolves ``--resume`` (verifying checksums) and tells the other ranks."""
        if self.d.is_main:
            try:
                found = resolve_resume(resume, self.root if resume == "auto" else None, log)
                result = ("ok", None if found is None else (str(found[0]), found[1]))
            except UserError as e:
                result = ("error", str(e))
        else:
            result = None
        result = self._broadcast(result)
        if result[0] == "error":
            raise UserError(result[1])
        return None if result[1] is None else (Path(result[1][0]), result[1][1])

    def load(self, path: Path, model, optimizer) -> None:
        """Load model and optimizer (resharded to this job's layout) and this rank's RNG state."""
        import torch
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_state_dict

        msd, osd = _state(model, optimizer)
        sd = {"model": msd, "optim": osd}
        with _single_process_quiet():
            dcp.load(sd, checkpoint_id=str(path))
        for m, o in zip(*_pairs(model, optimizer)):
            mine_m, mine_o = _state(m, o)
            set_state_dict(m, o, model_state_dict={k: sd["model"][k] for k in mine_m},
                           optim_state_dict={k: sd["optim"][k] for k in mine_o}, options=_OPTIONS())
        rng_file = path / f"rank_{self.d.rank:05d}.pt"
        if rng_file.is_file():
            rng = torch.load(rng_file, weights_only=True)
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and self.d.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.d.device)
