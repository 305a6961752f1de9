"""The Python API (issue 19): the README's example runs exactly as written, results are typed with
to_dict(), bad input raises megacluster.UserError."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

import megacluster as mc

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    m = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md has the API example block after <!-- api-example -->"
    return m.group(1)


def test_readme_example_runs_as_written():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(readme_example(), "README.md", "exec"), {"__name__": "readme_example"})
    text = out.getvalue()
    assert "tokens/s per GPU" in text and "fastest layout: TP" in text and "binding: days" in text
    assert "validation MAPE" in text and "error: layout does not fit" in text


def test_results_are_typed_with_to_dict():
    e = mc.estimate(model="llama3.1-8b", gpu="h100-sxm", gpus=8, zero=3)
    assert isinstance(e, mc.api.Estimate) and e.to_dict()["layout"]["dp"] == 8 and 0 < e.mfu < 1
    p = mc.plan("llama3.1-8b", "h100-sxm", 8, global_batch=32, top=2)
    assert isinstance(p, mc.api.Plan) and p.to_dict()["best"]["step_time_s"] == pytest.approx(p.best.step_time_s)
    c = mc.campaign(model="llama3.1-8b", tokens=1e11, gpu="h100-sxm", gpus=64, reliability=False)
    assert isinstance(c, mc.api.Campaign) and c.to_dict()["n_gpus"] == 64


def test_modules_stay_importable_beside_the_functions():
    from megacluster.campaign.campaign import run_campaign   # noqa: F401
    from megacluster.estimate import estimate

    assert callable(estimate) and callable(mc.estimate) and mc.estimate.estimate is estimate


@pytest.mark.parametrize("call, msg", [
    (lambda: mc.estimate(model="nope", gpu="h100-sxm", gpus=8), "unknown model"),
    (lambda: mc.campaign(model="llama3.1-8b", gpu="h100-sxm", gpus=8), "campaign needs tokens"),
    (lambda: mc.campaign(model="llama3.1-8b", tokens=-1, gpu="h100-sxm", gpus=8), "tokens must be a positive number"),
    (lambda: mc.campaign(scenario="xai-colossus-100k", gpus=8), "give scenario= alone"),
    (lambda: mc.size(scenario="meta-llama3-405b"), "not a sizing question"),
    (lambda: mc.plan("llama3.1-8b", "h100-sxm", 8, tp=3), "tp"),
])
def test_errors_raise_user_error(call, msg):
    with pytest.raises(mc.UserError, match=msg):
        call()
