"""Collective-communication times on a two-level hierarchy: NVLink inside a node, NICs and switch tiers
across nodes. Closed forms of the ring algorithms (nccl-tests doc/PERFORMANCE.md):

* all-reduce:      2 (n-1)/n x S / B   (+ latency)
* all-gather / reduce-scatter: (n-1)/n x S / B (S = the full, gathered buffer)
* all-to-all:      (n-1)/n x S / B, split into the NVLink part and the NIC part

``S`` in bytes, ``B`` in bytes/s. Across nodes, the ring's node-crossing edges are spread over the NICs of
the ``k`` group members in each node, so B = k x (NIC bandwidth per GPU), capped by NVLink. Latency follows
NCCL's own performance model (src/graph/tuning.cc): all-reduce by a tree across N nodes (2 log2 N network
steps, as NCCL picks for large groups), all-gather and reduce-scatter by the ring, the only algorithm NCCL has
for them across nodes with several GPUs per node (NVIDIA/nccl#1473: "Implementing a Tree algorithm for
allgather/reducescatter is very hard"; PAT, NCCL 2.23+, only for one GPU per node): n - 1 steps, N - 1 of
them across the network, so the latency grows linearly with the ranks (NVIDIA/nccl#1712).
All functions accept numpy arrays and broadcast.
"""

from __future__ import annotations

import numpy as np

from ..specs import ClusterSpec


def ring_allreduce_time(size_bytes, n, bw_bytes_s, latency_s=0.0):
    """Ring all-reduce of ``size_bytes`` over ``n`` ranks at per-rank bandwidth ``bw_bytes_s``."""
    n = np.asarray(n, dtype=float)
    return np.where(n > 1, 2 * (n - 1) / np.maximum(n, 1) * size_bytes / bw_bytes_s + 2 * (n - 1) * latency_s, 0.0)


def ring_allgather_time(size_bytes, n, bw_bytes_s, latency_s=0.0):
    """Ring all-gather (or reduce-scatter) where ``size_bytes`` is the full gathered buffer."""
    n = np.asarray(n, dtype=float)
    return np.where(n > 1, (n - 1) / np.maximum(n, 1) * size_bytes / bw_bytes_s + (n - 1) * latency_s, 0.0)


def tree_allreduce_latency(n, latency_s):
    """Latency term of a (double binary) tree all-reduce: 2 ceil(log2 n) steps."""
    n = np.asarray(n, dtype=float)
    return np.where(n > 1, 2 * np.ceil(np.log2(np.maximum(n, 1))) * latency_s, 0.0)


def _span_penalty(cluster: ClusterSpec, span_gpus):
    """(bandwidth divisor, extra latency in s) for a group spread over ``span_gpus`` consecutive GPUs:
    every fabric tier whose reach the span exceeds adds its latency and its oversubscription."""
    span = np.asarray(span_gpus, dtype=float)
    over = np.ones_like(span)
    lat = np.zeros_like(span)
    prev_reach = cluster.node.nvlink_domain
    for tier in cluster.fabric.tiers:
        crossing = span > prev_reach
        over = np.where(crossing, np.maximum(over, tier.oversubscription), over)
        lat = lat + np.where(crossing, tier.latency_us * 1e-6, 0.0)
        prev_reach = tier.reach_gpus
    return over, lat


def group_bandwidth(cluster: ClusterSpec, n, per_node, span_gpus):
    """(bytes/s per rank, per-step latency in s, nodes) of a group of ``n`` ranks with ``per_node`` of them
    in each node and spread over ``span_gpus`` GPUs."""
    n = np.asarray(n, dtype=float)
    k = np.minimum(np.asarray(per_node, dtype=float), n)
    nodes = np.ceil(n / np.maximum(k, 1))
    nvl = cluster.gpu.nvlink_gbs * 1e9 * cluster.node.nvlink_efficiency
    if cluster.gpu.nvlink_gbs <= 0:
        nvl = cluster.nic_gbs_per_gpu * 1e9
    over, extra_lat = _span_penalty(cluster, span_gpus)
    inter = np.minimum(k * cluster.nic_gbs_per_gpu * 1e9 / over, nvl)
    bw = np.where(nodes > 1, inter, nvl)
    lat_net = (cluster.fabric.base_latency_us * 1e-6 + extra_lat)
    return bw, lat_net, nodes


def allreduce_time(cluster: ClusterSpec, size_bytes, n, per_node, span_gpus):
    """All-reduce of ``size_bytes`` per rank over a group (hierarchical bandwidth, ring/tree latency)."""
    bw, lat_net, nodes = group_bandwidth(cluster, n, per_node, span_gpus)
    k = np.minimum(np.asarray(per_node, dtype=float), n)
    lat_nvl = cluster.node.nvlink_latency_us * 1e-6
    lat = 2 * np.maximum(k - 1, 0) * lat_nvl + tree_allreduce_latency(nodes, lat_net)
    return np.where(np.asarray(n) > 1, ring_allreduce_time(size_bytes, n, bw) + lat, 0.0)


def ring_allgather_latency(n, nodes, lat_nvl_s, lat_net_s):
    """Latency of a ring all-gather (or reduce-scatter) over ``n`` ranks on ``nodes`` nodes, in seconds: NCCL's
    ring model (src/graph/tuning.cc) takes n - 1 steps, nodes - 1 of them across the network at the network's
    per-step latency and the rest over NVLink."""
    n = np.asarray(n, dtype=float)
    nodes = np.minimum(np.maximum(np.asarray(nodes, dtype=float), 1.0), np.maximum(n, 1.0))
    return np.maximum(n - nodes, 0.0) * lat_nvl_s + np.maximum(nodes - 1.0, 0.0) * lat_net_s


def allgather_time(cluster: ClusterSpec, size_bytes, n, per_node, span_gpus):
    """All-gather (or reduce-scatter) where ``size_bytes`` is the full buffer after gathering: ring bandwidth
    and ring latency (``ring_allgather_latency``)."""
    bw, lat_net, nodes = group_bandwidth(cluster, n, per_node, span_gpus)
    lat_nvl = cluster.node.nvlink_latency_us * 1e-6
    lat = ring_allgather_latency(n, nodes, lat_nvl, lat_net)
    return np.where(np.asarray(n) > 1, ring_allgather_time(size_bytes, n, bw) + lat, 0.0)


def alltoall_time(cluster: ClusterSpec, size_bytes, n, per_node, span_gpus):
    """All-to-all where each rank holds ``size_bytes`` and sends (n-1)/n of it: the share to ranks in the
    same node goes over NVLink, the rest through this GPU's share of the node's NICs (all ranks send at
    once)."""
    n = np.asarray(n, dtype=float)
    k = np.minimum(np.asarray(per_node, dtype=float), n)
    nvl = max(cluster.gpu.nvlink_gbs, 1e-9) * 1e9 * cluster.node.nvlink_efficiency
    over, extra_lat = _span_penalty(cluster, span_gpus)
    nic = cluster.nic_gbs_per_gpu * 1e9 / over
    intra = (k - 1) / np.maximum(n, 1) * size_bytes / nvl
    inter = (n - k) / np.maximum(n, 1) * size_bytes / nic
    lat = np.where(n > k, cluster.fabric.base_latency_us * 1e-6 + extra_lat, cluster.node.nvlink_latency_us * 1e-6)
    return np.where(n > 1, np.maximum(intra, inter) + lat, 0.0)


def p2p_time(cluster: ClusterSpec, size_bytes, crosses_node):
    """Point-to-point send of ``size_bytes`` between pipeline stages (NIC when it crosses a node)."""
    nvl = max(cluster.gpu.nvlink_gbs, 1e-9) * 1e9 * cluster.node.nvlink_efficiency
    nic = cluster.nic_gbs_per_gpu * 1e9
    return np.where(crosses_node, size_bytes / nic + cluster.fabric.base_latency_us * 1e-6,
                    size_bytes / nvl + cluster.node.nvlink_latency_us * 1e-6)
