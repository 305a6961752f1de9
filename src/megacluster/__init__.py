"""megacluster: plan, simulate and run LLM training on GPU supercomputers.

Data flows catalog -> specs -> estimate (one step) -> search (best plan) -> campaign -> report,
and plan -> runtime -> measurements -> calibration -> estimate. See docs/architecture.md.
"""

__version__ = "0.1.0"
