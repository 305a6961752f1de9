"""The global batch as a choice, bounded by a published batch-size scaling law.

DeepSeek LLM (Bi et al. 2024, arXiv 2401.02954, section 3.1, eq. 1) fitted the near-optimal batch size to the
compute budget over 1e17-3e20 FLOP:

    B_opt = 0.2920 * C^0.3271   tokens per step

(with the learning rate eta_opt = 0.3118 * C^-0.1250). Their C is non-embedding FLOPs per token times tokens;
here C is the campaign's training FLOPs (the step model's count, embedding and output layer included), a few
percent larger for large models. The paper shows a broad band of near-optimal batch sizes around the fit, so a
campaign may take any batch from half of B_opt up to B_opt: larger batches need fewer, larger steps (less
pipeline bubble, fewer gradient reductions) but, beyond the law's optimum, more tokens for the same loss. The
law is extrapolated beyond its fitted range for frontier budgets; that is stated with the bound.
"""

from __future__ import annotations

import math

from pydantic import BaseModel

from ..errors import UserError

B_OPT_COEFF = 0.2920
B_OPT_EXPONENT = 0.3271
LOW_FRACTION = 0.5          # the lowest batch a campaign may take, as a fraction of B_opt
FIT_MAX_FLOPS = 3e20        # the largest budget in the law's fit
SOURCE = ("DeepSeek LLM (arXiv 2401.02954) section 3.1, eq. 1: B_opt = 0.2920 C^0.3271 tokens, fitted over "
          "1e17-3e20 FLOP")


class BatchBound(BaseModel):
    """Global-batch bounds from the law, in tokens and in sequences of ``seq_len`` tokens."""

    training_flops: float
    b_opt_tokens: float
    seq_len: int
    low_sequences: int
    high_sequences: int
    rule: str
    source: str = SOURCE
    extrapolated: bool

    def text(self) -> str:
        """One line naming the bound used."""
        ext = f"; extrapolated beyond its fit up to {FIT_MAX_FLOPS:.0e} FLOP" if self.extrapolated else ""
        return (f"bound {self.low_sequences:,}-{self.high_sequences:,} sequences of {self.seq_len:,} tokens: "
                f"{self.rule} = {self.b_opt_tokens / 1e6:,.1f}M tokens at C = {self.training_flops:.3g} FLOP "
                f"(DeepSeek LLM, arXiv 2401.02954 eq. 1{ext})")


def optimal_batch_tokens(training_flops: float) -> float:
    """DeepSeek LLM's near-optimal batch size, tokens per step, for a budget of ``training_flops`` FLOP."""
    if not training_flops > 0:
        raise UserError(f"training compute must be positive to size the batch, got {training_flops:g} FLOP")
    return B_OPT_COEFF * training_flops ** B_OPT_EXPONENT


def batch_bound(training_flops: float, seq_len: int) -> BatchBound:
    """The global batch a campaign may choose, in sequences: [B_opt / 2, B_opt] (at least one sequence)."""
    if seq_len < 1:
        raise UserError(f"sequence length must be positive, got {seq_len}")
    b = optimal_batch_tokens(training_flops)
    hi = max(1, math.floor(b / seq_len))
    lo = max(1, math.ceil(hi * LOW_FRACTION))
    return BatchBound(training_flops=training_flops, b_opt_tokens=b, seq_len=seq_len, low_sequences=lo,
                      high_sequences=hi, rule="B_opt = 0.292 C^0.3271",
                      extrapolated=training_flops > FIT_MAX_FLOPS)
