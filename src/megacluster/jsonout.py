"""The one writer of ``--json`` output: strict JSON (no NaN or Infinity), one object per line on stdout.

Every command's ``--json`` goes through :func:`print_json`, so that any strict parser (``json.loads`` with
``parse_constant`` refusing constants, ``jq``, JavaScript's ``JSON.parse``) reads what megacluster prints. A
result holding a number that is not finite is a bug or an input that slipped past the checks: it becomes one
:class:`UserError` line instead of output that is not JSON.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from .errors import UserError


def _default(obj: Any) -> Any:
    """numpy scalars and arrays, paths and sets as plain JSON values."""
    if hasattr(obj, "tolist"):                 # numpy scalar or array
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return float(obj)


def dumps(obj: Any) -> str:
    """``obj`` as strict JSON text; a non-finite number is a UserError naming where it is."""
    try:
        return json.dumps(obj, allow_nan=False, default=_default)
    except ValueError:
        raise UserError(f"the result holds a number that is not finite ({_where_not_finite(obj)}); check the "
                        "inputs for values that are zero, huge or not numbers") from None
    except TypeError as e:
        raise UserError(f"the result cannot be written as JSON ({e})") from None


def print_json(obj: Any) -> None:
    """Print ``obj`` as one line of strict JSON on stdout."""
    text = dumps(obj)
    sys.stdout.write(text + "\n")


def _where_not_finite(obj: Any, at: str = "") -> str:
    """The path of the first non-finite number in ``obj`` (``runs[3].error``), or 'somewhere'."""
    todo = [(obj, at)]
    while todo:
        v, here = todo.pop(0)
        if isinstance(v, float) and not math.isfinite(v):
            return here.lstrip(".") or "the value"
        if isinstance(v, dict):
            todo.extend((x, f"{here}.{k}") for k, x in v.items())
        elif isinstance(v, (list, tuple)):
            todo.extend((x, f"{here}[{i}]") for i, x in enumerate(v))
    return "somewhere"
