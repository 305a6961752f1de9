"""Compute-optimal sizing (Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models"):
about 20 training tokens per parameter, and training compute C = (FLOPs per token) x D with the usual
approximation FLOPs per token = 6 N. Here the FLOPs per token are the step model's (6 N plus attention), so
the model fits the budget exactly.

Shapes of models that have none published follow the Llama 3 405B family (Llama 3 paper, arXiv 2407.21783,
Table 3: d_model 16384, 126 layers, FFN 53248 = 3.25 x d_model, 128 query heads of 128, 8 key/value heads,
vocabulary 128,256, SwiGLU, 8,192 context): the width-to-depth ratio and head sizes are kept, the width
scales with the parameter count.
"""

from __future__ import annotations

import math

from ..errors import UserError
from ..specs import ModelSpec

TOKENS_PER_PARAM = 20.0
LLAMA3_SHAPE_SOURCE = ("Llama 3 405B family shape (arXiv 2407.21783 Table 3): d_model/n_layers = 16384/126, "
                       "FFN 3.25 x d_model, head dim 128, 8 KV heads, vocab 128256, SwiGLU, context 8192")


def dense_llama3_family(n_params: float, name: str = "") -> ModelSpec:
    """A dense Llama-3-shaped model with about ``n_params`` parameters.

    The width is the multiple of 1,024 nearest the Llama 3 width-to-depth ratio; the layer count is then
    chosen to match ``n_params`` (within half a layer).
    """
    if n_params < 1e8:
        raise UserError(f"cannot shape a model of {n_params:.3g} parameters (at least 1e8)")

    def build(d: int, layers: int) -> ModelSpec:
        ffn = int(round(3.25 * d / 256) * 256)
        return ModelSpec(name=name or f"dense-{n_params / 1e9:.0f}b", n_layers=layers, d_model=d,
                         n_heads=d // 128, n_kv_heads=8, head_dim=128, ffn_hidden=ffn, vocab=128256,
                         mlp="swiglu", seq_len=8192, source=LLAMA3_SHAPE_SOURCE)

    # at the Llama 3 ratio, params ~ (d * 126/16384) * 11.75 d^2  ->  d ~ (N * 16384 / (126 * 11.75))^(1/3)
    d = max(1024, int(round((n_params * 16384 / (126 * 11.75)) ** (1 / 3) / 1024)) * 1024)
    one = build(d, 1)
    per_layer = build(d, 2).params_total - one.params_total
    embed = one.params_total - per_layer
    layers = max(1, int(round((n_params - embed) / per_layer)))
    return build(d, layers)


def flops_per_token(model: ModelSpec) -> float:
    """Training FLOPs per token of ``model`` at its context length (the step model's count)."""
    from ..physics.flops import model_flops_per_token

    return float(model_flops_per_token(model, model.seq_len))


def optimal_for_compute(training_flops: float, tokens_per_param: float = TOKENS_PER_PARAM,
                        name: str = "") -> tuple[ModelSpec, float]:
    """The compute-optimal dense model and token count for a compute budget. Returns (model, tokens)."""
    k = 6.0
    model = dense_llama3_family(math.sqrt(training_flops / (tokens_per_param * k)), name)
    for _ in range(3):
        k = flops_per_token(model) / model.params_total
        model = dense_llama3_family(math.sqrt(training_flops / (tokens_per_param * k)), name)
    return model, training_flops / flops_per_token(model)


# Compute-optimal scaling laws: name -> (tokens for a budget C in FLOP, source).
LLAMA3_TOKENS_COEFF, LLAMA3_TOKENS_EXPONENT = 0.299, 0.537
LAWS = {
    "chinchilla": ("Hoffmann et al. 2022 (Chinchilla, arXiv 2203.15556): about 20 training tokens per parameter, "
                   "D = 20 N"),
    "llama3": ("Llama 3 paper (arXiv 2407.21783) section 3.2.1: compute-optimal tokens N*(C) = 0.299 C^0.537, "
               "fitted over 6e18-1e22 FLOP (402B parameters on 16.55T tokens at 3.8e25)"),
}


def compute_optimal(training_flops: float, law: str = "chinchilla", name: str = "") -> tuple[ModelSpec, float]:
    """The compute-optimal dense model (Llama 3 family shape) and its tokens for a budget of ``training_flops``
    FLOP under a named scaling law (:data:`LAWS`). The tokens are the budget over the model's FLOPs per
    token, so the model spends the budget exactly. Returns (model, tokens)."""
    if law not in LAWS:
        raise UserError(f"unknown scaling law {law!r}; known: {', '.join(LAWS)}")
    if not training_flops > 0:
        raise UserError(f"the compute budget must be positive, got {training_flops:g} FLOP")
    if law == "chinchilla":
        return optimal_for_compute(training_flops, TOKENS_PER_PARAM, name)
    tokens = LLAMA3_TOKENS_COEFF * training_flops ** LLAMA3_TOKENS_EXPONENT
    k = 6.0
    model = dense_llama3_family(training_flops / (k * tokens), name)
    for _ in range(3):
        k = flops_per_token(model) / model.params_total
        model = dense_llama3_family(training_flops / (k * tokens), name)
    return model, training_flops / flops_per_token(model)
