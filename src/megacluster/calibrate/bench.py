"""Microbenchmarks on the local device with PyTorch (imported here only): GEMMs over M/N/K, causal attention
forward/backward over sequence lengths, memory bandwidth, the host time per eager op of the runtime's own
model, and collectives over message sizes in a process group. Each returns raw points: on a GPU, seconds are the
best of a few repetitions after a warm-up (the device's capability: its clocks are steady and the spread is a few
percent); on a CPU, the median of the repetitions (``stat_for``): a virtual machine's speed drifts with its
neighbours by 10-30% within minutes, and a training step, which repeats each operation thousands of times, pays
the typical speed, not the best moment."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

Tick = Callable[[str], None]


@dataclass
class Sweep:
    """Sizes of one calibration (``quick`` or full), per device kind."""

    gemm_mn: tuple[int, ...]
    gemm_k: tuple[int, ...]
    attn_seq: tuple[int, ...]
    stream_bytes: int
    coll_bytes: tuple[int, ...]
    reps: int


def sweep(device_type: str, quick: bool, tiny: bool = False) -> Sweep:
    """The sizes measured: small enough on a CPU for ``--quick`` to finish in well under two minutes."""
    if tiny:      # tests: seconds
        return Sweep((32, 128), (32, 128), (32, 64), 1 << 20, (1 << 10, 1 << 14), 2)
    if device_type == "cuda":
        mn = (256, 1024, 4096, 8192) if quick else (256, 1024, 2048, 4096, 8192, 16384)
        k = (64, 256, 1024, 4096, 8192) if quick else (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
        return Sweep(mn, k, (512, 1024, 2048, 4096, 8192), 1 << 30,
                     tuple(1 << p for p in range(12, 29 if quick else 31, 2)), 5 if quick else 10)
    mn = (64, 256, 1024) if quick else (32, 64, 128, 256, 512, 1024, 2048)
    k = (32, 128, 512, 1024) if quick else (16, 32, 64, 128, 256, 512, 1024, 2048)
    return Sweep(mn, k, (64, 128, 256, 512) if quick else (32, 64, 128, 256, 512, 1024, 2048), 1 << 27,
                 tuple(1 << p for p in range(10, 23 if quick else 25, 2)), 3 if quick else 5)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock(device):
    """The clock a benchmark reads: on a CPU at one thread the calling thread's CPU time (every op runs on it,
    so other processes sharing the cores do not inflate the figure); else wall time."""
    import torch

    if device.type == "cpu" and torch.get_num_threads() == 1:
        return time.thread_time
    return time.perf_counter


def stat_for(device) -> str:
    """How repetitions of a compute microbenchmark are summarised on ``device``: "best" on a GPU, "median" on a
    CPU (see the module docstring)."""
    return "median" if device.type == "cpu" else "best"


def best_time(fn, device, reps: int, inner: int = 1, wall: bool = False, stat: str = "best") -> float:
    """Best (or, with ``stat="median"``, median) time of ``fn`` over ``reps`` repetitions (each the mean of
    ``inner`` calls), after one warm-up call (``wall``: wall time whatever the device: collectives wait on other
    processes and the backend's threads)."""
    import statistics

    if stat not in ("best", "median"):
        raise ValueError(f"stat must be best or median, not {stat!r}")
    clock = time.perf_counter if wall else _clock(device)
    fn()
    _sync(device)
    times = []
    for _ in range(max(reps, 1)):
        t = clock()
        for _ in range(inner):
            fn()
        _sync(device)
        times.append((clock() - t) / inner)
    return min(times) if stat == "best" else statistics.median(times)


def typical_time(fn, reps: int, inner: int = 1) -> float:
    """Median wall time of ``fn`` over ``reps`` repetitions (each the mean of ``inner`` back-to-back calls), after
    one warm-up call: what a training step pays for an operation it repeats. On a CPU with gloo the best
    repetition of a collective is 2-3x faster than the typical one (the backend's threads are woken, the
    peer is late by a few hundred microseconds), so the best time would price a step's collectives too low."""
    import torch

    return best_time(fn, torch.device("cpu"), reps, inner, wall=True, stat="median")


def gemm_points(device, dtype, sw: Sweep, tick: Tick) -> list[list[float]]:
    """Rows (m, n, k, seconds) of (m x k) @ (k x n) over the sweep."""
    import torch

    out = []
    for m in sw.gemm_mn:
        for n in sw.gemm_mn:
            for k in sw.gemm_k:
                flops = 2.0 * m * n * k
                inner = max(1, min(50, int(2e8 / flops)))     # tiny GEMMs: time several per repetition
                times = [best_time(fn, device, sw.reps, inner, stat=stat_for(device))
                         for fn in gemm_layouts(m, n, k, device, dtype)]
                out.append([m, n, k, sum(times) / len(times)])
                tick("gemm")
    return out


def gemm_layouts(m: int, n: int, k: int, device, dtype) -> list:
    """The (m x k) @ (k x n) products a training step runs, as callables. A linear layer's forward multiplies by
    the transposed weight (x W^T), its input gradient is plain (g W) and its weight gradient transposes the
    activations (g^T x): one of each per layer. A CPU BLAS runs the transposed layouts at 5-30% below the
    plain one at the small shapes of a CPU run (measured here with torch 2.13), so on a CPU the three layouts
    are timed and averaged; a GPU's cuBLAS runs them alike, and the plain one is timed."""
    import torch

    a = torch.randn(m, k, device=device).to(dtype)
    b = torch.randn(k, n, device=device).to(dtype)
    if device.type != "cpu":
        return [lambda: torch.mm(a, b)]
    at = torch.randn(k, m, device=device).to(dtype)
    bt = torch.randn(n, k, device=device).to(dtype)
    return [lambda: torch.mm(a, b), lambda: torch.mm(at.t(), b), lambda: torch.mm(a, bt.t())]


def attention_points(device, dtype, sw: Sweep, tick: Tick, heads: int = 8, head_dim: int = 64
                     ) -> list[list[float]]:
    """Rows (seq, causal forward FLOPs, forward s, backward s) of SDPA with ``is_causal`` (one sequence)."""
    import torch
    import torch.nn.functional as F

    out = []
    for s in sw.attn_seq:
        q, k, v = (torch.randn(1, heads, s, head_dim, device=device, dtype=dtype, requires_grad=True)
                   for _ in range(3))
        grad = torch.ones(1, heads, s, head_dim, device=device, dtype=dtype)

        def fwd():
            with torch.no_grad():
                F.scaled_dot_product_attention(q, k, v, is_causal=True)

        def fwd_bwd():
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            y.backward(grad)
            q.grad = k.grad = v.grad = None

        flops = 2.0 * heads * head_dim * s * s         # QK^T and PV, 2 FLOPs per MAC, half the scores (causal)
        inner = max(1, min(20, int(5e7 / flops)))
        tf = best_time(fwd, device, sw.reps, inner, stat=stat_for(device))
        tfb = best_time(fwd_bwd, device, sw.reps, inner, stat=stat_for(device))
        out.append([s, flops, tf, max(tfb - tf, 1e-9)])
        tick("attention")
    return out


def stream_points(device, sw: Sweep, tick: Tick) -> list[list[float]]:
    """Rows (bytes moved, seconds): copy (read + write) and add (2 reads + write) of fp32 buffers."""
    import torch

    out = []
    for frac in (4, 2, 1):
        n = sw.stream_bytes // 4 // frac
        a = torch.ones(n, device=device)
        b = torch.empty(n, device=device)
        c = torch.empty(n, device=device)
        out.append([2.0 * 4 * n, best_time(lambda: b.copy_(a), device, sw.reps, stat=stat_for(device))])
        out.append([3.0 * 4 * n, best_time(lambda: torch.add(a, b, out=c), device, sw.reps,
                                             stat=stat_for(device))])
        tick("memory")
    return out


def op_points(device, tick: Tick, reps: int = 5) -> dict:
    """Host time of the runtime's own model at a size where compute is negligible: forward + backward of a tiny
    Llama with 2 and with 6 layers; the difference is 4 layers' eager ops (counts from the stack's constants)."""
    import torch
    import torch.nn.functional as F

    from ..runtime.model import Transformer
    from ..specs import ModelSpec

    x = torch.randint(0, 64, (1, 8), device=device)
    times = {}
    for layers in (2, 6):
        spec = ModelSpec(name="op-probe", n_layers=layers, d_model=16, n_heads=2, n_kv_heads=1, ffn_hidden=32,
                         vocab=64, mlp="swiglu", seq_len=8)
        model = Transformer(spec, 8).to(device)
        model.init_weights(0)

        def step():
            loss = F.cross_entropy(model(x).flatten(0, 1).float(), x.flatten())
            loss.backward()

        times[layers] = best_time(step, device, reps, inner=5, stat=stat_for(device))
        tick("ops")
    return {"layers_2_s": times[2], "layers_6_s": times[6], "per_layer_s": max(times[6] - times[2], 0.0) / 4}


# ---------------------------------------------------------------------------------------- collectives
COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "p2p")


def collective_points(device, sizes, reps: int) -> tuple[list[list], list[str]]:
    """Rows (op, bytes, seconds) in the current process group (every rank calls this); bytes = the full
    buffer (all-reduce: each rank's; all-gather/reduce-scatter: the gathered one; all-to-all: each rank's;
    p2p: one message, rank 0 -> 1 and back, halved). On a CPU each row has a fourth column: the CPU seconds
    the backend's threads spent per call (gloo's transport copies and polling), the slowest rank's. Also the
    ops the backend refused."""
    import torch
    import torch.distributed as dist

    n, rank = dist.get_world_size(), dist.get_rank()
    rows, skipped = [], []
    for op in COLLECTIVES:
        try:
            for size in sizes:
                elems = max(n, size // 4 // n * n)
                buf = torch.ones(elems, device=device)
                part = torch.empty(elems // n, device=device)
                if op == "all_reduce":
                    fn = lambda: dist.all_reduce(buf)  # noqa: E731
                elif op == "all_gather":
                    fn = lambda: dist.all_gather_into_tensor(buf, part)  # noqa: E731
                elif op == "reduce_scatter":
                    fn = lambda: dist.reduce_scatter_tensor(part, buf)  # noqa: E731
                elif op == "all_to_all":
                    out = torch.empty_like(buf)
                    fn = lambda: dist.all_to_all_single(out, buf)  # noqa: E731
                else:
                    def fn():
                        if rank == 0:
                            dist.send(buf, 1)
                            dist.recv(buf, 1)
                        elif rank == 1:
                            dist.recv(buf, 0)
                            dist.send(buf, 0)
                dist.barrier()
                if device.type == "cpu":
                    # gloo: the typical time of back-to-back calls, as a step issues them, and the CPU time the
                    # backend's own threads spend per call (process CPU time less this thread's)
                    reps_c, inner = max(reps, 3), 3
                    p0, th0 = time.process_time(), time.thread_time()
                    t = typical_time(fn, reps_c, inner)
                    backend = max(0.0, (time.process_time() - p0) - (time.thread_time() - th0)) / (1 + reps_c * inner)
                else:
                    t, backend = best_time(fn, device, reps, wall=True), 0.0
                t_all = torch.tensor([t, backend], dtype=torch.float64)
                dist.all_reduce(t_all, op=dist.ReduceOp.MAX)       # a collective ends when its slowest rank does
                t, backend = float(t_all[0]), float(t_all[1])
                half = 0.5 if op == "p2p" else 1.0
                rows.append([op, 4 * elems, t * half] + ([backend * half] if device.type == "cpu" else []))
        except (RuntimeError, NotImplementedError, ValueError) as e:
            skipped.append(f"{op}: {str(e).splitlines()[0][:120]}")
            rows = [r for r in rows if r[0] != op]
    return rows, skipped


#: collectives as the dispatcher names them: the functional ones DTensor's redistributions call
#: (``_c10d_functional.*``) and the process-group ones FSDP2 calls (``c10d.*``); not waits or barriers
_COLLECTIVE_NAMES = ("all_gather", "allgather", "reduce_scatter", "all_reduce", "allreduce", "all_to_all",
                     "alltoall")


def count_parallel_ops(step_fwd, step_bwd) -> dict:
    """Ops one forward (``step_fwd()`` returns the loss) and backward (``step_bwd(loss)``) issue, counted with a
    TorchDispatchMode: DTensor ops (any argument a DTensor: each goes through DTensor's dispatch, sharding
    propagation and the local op), the functional collectives of DTensor's redistributions, and plain aten ops.
    A mode sees the ops called at the top level (the model's code, the TP plan's hooks and their backward);
    collectives DTensor issues inside its own dispatch (implicit redistributions) are not seen. Returns
    ``{fwd,bwd}_{dtensor,collectives,plain}``."""
    import collections

    import torch
    from torch.distributed.tensor import DTensor
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.n = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = str(func)
            if "c10d" in name and any(k in name for k in _COLLECTIVE_NAMES):
                self.n["collectives"] += 1
            elif any(isinstance(a, DTensor) for a in tree_leaves((args, kwargs))):
                self.n["dtensor"] += 1
            else:
                self.n["plain"] += 1
            return func(*args, **kwargs)

    out = {}
    with Count() as c:
        loss = step_fwd()
    out.update({f"fwd_{k}": c.n[k] for k in ("dtensor", "collectives", "plain")})
    with Count() as c:
        step_bwd(loss)
    out.update({f"bwd_{k}": c.n[k] for k in ("dtensor", "collectives", "plain")})
    return out


def parallel_layer_points(device, rank: int, world: int, reps: int) -> dict:
    """Per layer of the runtime's tiny Llama (2 vs 6 layers, wall time, the median of repetitions; every rank
    runs it at once, as in training) under its FSDP2 (dp = world) and DTensor tensor parallelism (tp = world)
    in this group, and the plain model beside them: forward + backward (``*_per_layer_s``), and gradient
    clipping + the AdamW step (``*_opt_per_layer_s``); and, counted with ``count_parallel_ops``, the DTensor
    ops and functional collectives per layer of forward and of backward (``*_ops_layer``) and in the rest of the
    model (``*_ops_model``: embedding, final norm, output layer and loss)."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from ..runtime.model import Transformer
    from ..runtime.parallel import Dist, clip_grad_norm, make_mesh, parallelize
    from ..specs import Layout, ModelSpec

    x = torch.randint(0, 64, (1, 8), device=device)
    out: dict = {}
    for mode in ("plain", "fsdp", "tp"):
        lay = Layout(tp=world if mode == "tp" else 1, dp=world if mode == "fsdp" else 1, micro_batch=1,
                     global_batch=world if mode == "fsdp" else 1, seq_len=8, recompute="none", zero=3,
                     sequence_parallel=True, precision="bf16")
        d = Dist(rank=rank, world=world, local_rank=rank, device=device)
        if mode != "plain":
            make_mesh(d, lay)
        fns, counts = {}, {}
        for layers in (2, 6):
            spec = ModelSpec(name="op-probe", n_layers=layers, d_model=16 * world, n_heads=2 * world,
                             n_kv_heads=world, ffn_hidden=32 * world, vocab=64, mlp="swiglu", seq_len=8)
            torch.manual_seed(0)
            model = Transformer(spec, 8)
            model.init_weights(0)
            model.to(device)
            if mode != "plain":
                parallelize(model, d, lay, "fp32", False, "inductor")
            params = list(model.parameters())
            opt = torch.optim.AdamW(params, lr=1e-4, foreach=True)

            def fwd(model=model):
                return F.cross_entropy(model(x).flatten(0, 1).float(), x.flatten())

            def step(fwd=fwd):
                fwd().backward()

            def opt_step(params=params, opt=opt):
                clip_grad_norm(params, 1.0)
                opt.step()

            fns[layers] = (step, opt_step)
            counts[layers] = count_parallel_ops(fwd, lambda loss: loss.backward())
        # the 2- and 6-layer models timed in turn, each difference from one round: a drift in the machine's
        # speed (other work starting) moves both alike instead of one of them
        diffs = []
        for _ in range(max(reps, 5)):
            row = []
            for which in (0, 1):
                pair = []
                for layers in (2, 6):
                    dist.barrier()
                    pair.append(typical_time(fns[layers][which], 1, inner=3))
                row.append((pair[1] - pair[0]) / 4)
            diffs.append(row)
        import statistics

        times = [statistics.median(r[k] for r in diffs) for k in (0, 1)]
        # a layer's figures: the slowest rank's (a synchronous step waits for it)
        t = torch.tensor(times, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        out[f"{mode}_per_layer_s"] = max(float(t[0]), 0.0)
        out[f"{mode}_opt_per_layer_s"] = max(float(t[1]), 0.0)
        if mode != "plain":
            per_layer = {k: (counts[6][k] - counts[2][k]) / 4 for k in counts[6]}
            out[f"{mode}_ops_layer"] = per_layer
            # the rest of the model (embedding, final norm, output layer, loss): 2 layers' model less 2 layers
            out[f"{mode}_ops_model"] = {k: max(counts[2][k] - 2 * per_layer[k], 0.0) for k in counts[2]}
    return out


def _collective_worker(rank: int, world: int, init: str, out: str, device_type: str, sizes, reps) -> None:
    import json
    import warnings

    import torch
    import torch.distributed as dist

    warnings.filterwarnings("ignore", category=FutureWarning)   # the *_tensor collectives' renames
    torch.set_num_threads(1)           # as torchrun runs each process on a CPU
    if device_type == "cuda":
        torch.cuda.set_device(rank)
    dev = torch.device(device_type, rank) if device_type == "cuda" else torch.device("cpu")
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo", init_method=init, rank=rank,
                            world_size=world)
    try:
        rows, skipped = collective_points(dev, sizes, reps)
        try:
            layers = parallel_layer_points(dev, rank, world, reps)
        except (RuntimeError, ValueError) as e:       # a layout the group cannot run (world too large, ...)
            layers = {"skipped": str(e).splitlines()[0][:160]}
        if rank == 0:
            with open(out, "w", encoding="utf-8") as f:
                json.dump({"rows": rows, "skipped": skipped, "layers": layers}, f)
    finally:
        dist.destroy_process_group()


def spawn_collectives(device_type: str, procs: int, sizes, reps: int) -> dict:
    """Run the collective sweep in ``procs`` fresh local processes (gloo on CPU, NCCL on CUDA)."""
    import json
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        init = "file://" + os.path.join(tmp, "store")
        out = os.path.join(tmp, "out.json")
        mp.start_processes(_collective_worker, args=(procs, init, out, device_type, tuple(sizes), reps),
                           nprocs=procs, join=True,
                           start_method="spawn" if device_type == "cuda" else "fork")   # fork: no re-import
        with open(out, encoding="utf-8") as f:
            return json.load(f)
