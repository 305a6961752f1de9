"""megacluster: plan, simulate and run LLM training on GPU supercomputers.

Data flows catalog -> specs -> estimate (one step) -> search (best plan) -> campaign -> report,
and plan -> runtime -> measurements -> calibration -> estimate. See docs/architecture.md.

The Python API (:mod:`megacluster.api`): ``mc.estimate``, ``mc.plan``, ``mc.campaign``, ``mc.size`` and
``mc.validate`` return typed results with ``.to_dict()``; bad input raises :class:`UserError`.
"""

import importlib as _importlib
import types as _types

from .errors import UserError

__version__ = "0.1.0"

_API = ("estimate", "plan", "campaign", "size", "validate")
__all__ = ["UserError", *_API]


class _CallableModule(_types.ModuleType):
    """``estimate``, ``campaign`` and ``validate`` are modules of this package and API functions at once:
    ``mc.estimate(...)`` calls :func:`megacluster.api.estimate`, ``megacluster.estimate.estimate`` is still
    the step model."""

    def __call__(self, *args, **kwargs):
        from . import api

        return getattr(api, self.__name__.rsplit(".", 1)[1])(*args, **kwargs)


for _name in ("estimate", "campaign", "validate"):
    _importlib.import_module(f".{_name}", __name__).__class__ = _CallableModule


def __getattr__(name: str):
    """``plan`` and ``size``, imported on first use."""
    if name in ("plan", "size"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'megacluster' has no attribute {name!r}")
