"""Data: the default corpus, tokenizers, user files and the resumable loader."""

from __future__ import annotations

import numpy as np
import pytest

from megacluster.errors import UserError
from megacluster.runtime import data as D


def test_default_corpus_is_cpython_text_in_sorted_order():
    files = D.python_corpus_files()
    assert files[0].name == "topics.py" and files[0].parent.name == "pydoc_data"
    assert files[1:] == sorted(files[1:])
    assert not any("site-packages" in p.parts for p in files)
    assert len(files) > 500


def test_byte_tokenizer_round_trip():
    t = D.ByteTokenizer()
    ids = t.encode_all(["héllo", "wörld"])
    assert ids.max() < 256 and t.decode(ids) == "héllo\0wörld"


def test_loader_is_deterministic_resumable_and_rank_sliced():
    tokens = np.arange(10_000, dtype=np.int32)
    a = D.Loader(tokens, 15, seed=1)
    full = [a.take(8, 0, 8) for _ in range(5)]
    # two data-parallel ranks see the two halves of each global batch
    r0, r1 = D.Loader(tokens, 15, seed=1), D.Loader(tokens, 15, seed=1)
    for x, y in full:
        x0, y0 = r0.take(8, 0, 4)
        x1, _ = r1.take(8, 4, 4)
        assert np.array_equal(np.concatenate([x0, x1]), x) and np.array_equal(y0, x0 + 1)
    # resuming from the state gives the same next batch
    b = D.Loader(tokens, 15, seed=1)
    b.load_state_dict(a.state_dict())
    assert np.array_equal(b.take(8, 0, 8)[0], a.take(8, 0, 8)[0])
    # windows do not overlap within an epoch and every epoch covers them all
    c = D.Loader(tokens, 15, seed=2)
    starts = [int(c.take(1, 0, 1)[0][0, 0]) for _ in range(c.n_windows)]
    assert sorted(starts) == list(range(0, c.n_windows * 16, 16))


def test_loader_refuses_other_data():
    a = D.Loader(np.arange(1000, dtype=np.int32), 15, seed=1)
    b = D.Loader(np.arange(1000, dtype=np.int32), 31, seed=1)
    with pytest.raises(UserError, match="same --data"):
        b.load_state_dict(a.state_dict())


def test_text_jsonl_and_directories(tmp_path):
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "b.jsonl").write_text('{"text": "second"}\n\n{"text": "third", "id": 3}\n')
    assert D.read_texts(str(tmp_path / "b.jsonl")) == ["second", "third"]
    assert D.read_texts(str(tmp_path)) == ["first", "second", "third"]
    (tmp_path / "c.jsonl").write_text('{"body": "x"}\n')
    assert D.read_texts(str(tmp_path / "c.jsonl"), text_key="body") == ["x"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no .txt"):
        D.read_texts(str(empty))
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UserError, match="not UTF-8"):
        D.read_texts(str(tmp_path / "bin.txt"))


def test_hf_dataset_directory_needs_datasets(tmp_path):
    (tmp_path / "dataset_info.json").write_text("{}")
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="pip install datasets"):
            D.read_texts(str(tmp_path))


def test_bpe_tokenizer():
    texts = ["def f(x):\n    return x + 1\n"] * 50 + ["the quick brown fox"] * 50
    with pytest.raises(UserError, match="bpe:N"):
        D.make_tokenizer("bpe:10", texts)
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="pip install tokenizers"):
            D.make_tokenizer("bpe:400", texts)
        return
    t = D.make_tokenizer("bpe:400", texts)
    ids = t.encode_all(texts[:1])
    assert t.vocab <= 400 and len(ids) < len(texts[0])
