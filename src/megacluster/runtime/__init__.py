"""PyTorch training runtime (``megacluster train``): run a plan's layout for real and measure it.

Modules: ``model`` (Llama-architecture decoder built from a :class:`~megacluster.specs.ModelSpec`),
``parallel`` (process groups, FSDP2, tensor/sequence parallelism, activation checkpointing, compile),
``data`` (corpora, tokenizers, a resumable loader), ``checkpoint`` (atomic DCP checkpoints),
``metrics`` (FLOPs, peaks, console and JSONL), ``plan`` (plan files), ``train`` (the loop), ``cli``.

Everything except ``cli``, ``plan`` and ``config`` imports torch; ``cli`` imports it only when the command runs.
"""
