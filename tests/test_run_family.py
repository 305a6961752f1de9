"""Run families (one source's runs) for leave-one-family-out scoring."""

from megacluster import catalog
from megacluster.run_family import family_key, matches


def test_family_is_the_arxiv_id_of_the_source_title():
    a = {"id": "x", "source": {"title": "Narayanan et al. 2021, Efficient ... (arXiv:2104.04473)"}}
    b = {"id": "y", "source": {"title": "Someone 2024, Report (arXiv:2402.16819v2)"}}
    assert family_key(a) == "arxiv:2104.04473"
    assert family_key(b) == "arxiv:2402.16819"          # the version suffix is dropped


def test_family_falls_back_to_the_title_then_the_id():
    assert family_key({"id": "q", "source": {"title": "MosaicML  llm-foundry,\nMPT Benchmarks"}}) == \
        "mosaicml llm-foundry, mpt benchmarks"
    assert family_key({"id": "mpt-7b-8gpu"}) == "mpt"
    assert family_key({"id": "r", "source": "A blog post"}) == "a blog post"


def test_matches_an_arxiv_id_or_a_title_fragment_only():
    assert matches("arxiv:2407.21783", "arXiv:2407.21783")
    assert matches("mosaicml llm-foundry, mpt benchmarks", "MosaicML llm-foundry")
    assert not matches("arxiv:2407.21783", "arxiv:2412.19437")
    assert not matches("arxiv:2407.21783", "")


def test_every_single_source_constant_is_a_constant_of_its_variants():
    """A single_source entry names a constant the stack's variants set (or may set) and a family key."""
    for st in catalog.load("stacks")["stacks"]:
        for e in st.get("single_source") or []:
            assert set(e) == {"constant", "variants", "family", "revert", "basis"}
            assert e["basis"] in ("setup", "throughput")
            for v in e["variants"]:
                assert v in st["by_generation"], (st["id"], v)
            assert e["family"].strip()


def _cv_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "cross_validation.py"
    spec = importlib.util.spec_from_file_location("cross_validation", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_reverting_a_single_source_constant_changes_only_that_family_and_is_undone():
    """benchmarks/cross_validation.py: a family predicted with its own single-source constants reverted moves;
    the catalog is restored afterwards."""
    from megacluster.validate import load_runs, validate_runs

    cv = _cv_module()
    v3 = [r for r in load_runs("published") if family_key(r) == "arxiv:2412.19437"]
    entries = [e for e in cv.single_source_constants() if e["family"] == "arxiv:2412.19437"]
    before = validate_runs(v3)["runs"][0].predicted
    variant = next(s for s in catalog.load("stacks")["stacks"] if s["id"] == "hai-llm")["by_generation"]["default"]
    saved = dict(variant)
    with cv.reverted(entries):
        assert variant["schedule"] == "1f1b"
        during = validate_runs(v3)["runs"][0].predicted
    assert variant == saved and during != before
    assert validate_runs(v3)["runs"][0].predicted == before
