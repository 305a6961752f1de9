"""Training data with no download: corpora, tokenizers and a resumable, deterministic loader.

The default corpus is the text CPython ships: ``pydoc_data/topics.py`` (the language reference prose) followed by
the standard library's ``.py`` sources in sorted path order (``site-packages`` excluded), so that the same Python
version always yields the same bytes. User data: a ``.txt`` file, a ``.jsonl`` file (one JSON object a line,
the text under ``--text-key``), a directory of those (sorted), or a Hugging Face dataset saved with
``save_to_disk`` (needs the ``datasets`` package).

Tokenizers: ``byte`` (UTF-8 bytes, vocabulary 256) or ``bpe:N`` (a byte-level BPE with N tokens trained on the
fly on the corpus with Hugging Face ``tokenizers``).

The loader cuts the token stream into non-overlapping windows of ``seq_len + 1`` tokens, shuffles the windows
of each epoch with a generator seeded by (seed, epoch), and hands out global batches in that order; each
data-parallel rank takes its own slice of every global batch. Its whole state is the number of sequences
consumed, so it resumes exactly and independently of the number of ranks.
"""

from __future__ import annotations

import functools
import json
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..userfile import MAX_TEXT_BYTES, read_text

DEFAULT_CORPUS = "python"


def python_corpus_files() -> list[Path]:
    """The default corpus's files: pydoc topics first, then the stdlib ``.py`` sources, sorted."""
    import pydoc_data

    root = Path(sysconfig.get_paths()["stdlib"])
    topics = Path(pydoc_data.__file__).parent / "topics.py"
    skip = {"site-packages", "dist-packages", "__pycache__"}
    sources = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip]  # never descend into installed packages
        sources.extend(Path(dirpath) / f for f in filenames if f.endswith(".py"))
    return [topics] + sorted(p for p in sources if p != topics)


@functools.lru_cache(maxsize=1)
def _python_texts() -> tuple[str, ...]:
    return tuple(p.read_text(encoding="utf-8", errors="replace") for p in python_corpus_files())


def _read_jsonl(path: Path, key: str) -> list[str]:
    out = []
    for n, line in enumerate(read_text(path, "data file", MAX_TEXT_BYTES).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as e:
            why = getattr(e, "msg", "nested too deeply")
            raise UserError(f"{path}: line {n} is not valid JSON ({why})") from None
        if not isinstance(row, dict) or key not in row:
            raise UserError(f"{path}: line {n} has no {key!r} field (choose the field with --text-key)")
        out.append(str(row[key]))
    return out


def _read_hf_dataset(path: Path, key: str) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise UserError(f"{path} is a Hugging Face dataset; reading it needs `pip install datasets`") from None
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else ds[sorted(ds)[0]]
    if key not in ds.column_names:
        raise UserError(f"{path}: dataset has no column {key!r} (columns: {', '.join(ds.column_names)}; "
                        "choose one with --text-key)")
    return [str(t) for t in ds[key]]


def read_texts(source: str, text_key: str = "text") -> list[str]:
    """Documents of a data source: ``python`` (the default corpus), a file or a directory."""
    if source == DEFAULT_CORPUS:
        return list(_python_texts())
    p = Path(source)
    if not p.exists():
        raise UserError(f"data not found: {p} (give a .txt/.jsonl file, a directory, or `python`)")
    if p.is_dir():
        if (p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists() or \
                (p / "state.json").exists():
            return _read_hf_dataset(p, text_key)
        files = sorted(f for f in p.rglob("*") if f.suffix in (".txt", ".jsonl", ".md") and f.is_file())
        if not files:
            raise UserError(f"{p}: no .txt, .md or .jsonl files in this directory")
        return [t for f in files for t in read_texts(str(f), text_key)]
    if p.suffix == ".jsonl":
        return _read_jsonl(p, text_key)
    return [read_text(p, "data file", MAX_TEXT_BYTES)]


class ByteTokenizer:
    """UTF-8 bytes as tokens; documents separated by a NUL byte."""

    vocab = 256
    name = "byte"

    def encode_all(self, texts: list[str]) -> np.ndarray:
        return np.frombuffer("\0".join(texts).encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


class BPETokenizer:
    """A byte-level BPE with ``vocab`` tokens trained on the corpus (Hugging Face ``tokenizers``)."""

    name = "bpe"

    def __init__(self, vocab: int, texts: list[str]):
        try:
            from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        except ImportError:
            raise UserError("--tokenizer bpe needs the Hugging Face tokenizers package: pip install tokenizers") \
                from None
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|doc|>"], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts, trainer=trainer)
        self.tok = tok
        self.vocab = tok.get_vocab_size()

    def encode_all(self, texts: list[str]) -> np.ndarray:
        sep = self.tok.token_to_id("<|doc|>")
        ids: list[int] = []
        for enc in self.tok.encode_batch(texts):
            ids.extend(enc.ids)
            ids.append(sep)
        return np.asarray(ids, dtype=np.int32)

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids])


def make_tokenizer(kind: str, texts: list[str]):
    """``byte`` or ``bpe:N``."""
    if kind == "byte":
        return ByteTokenizer()
    if kind.startswith("bpe:"):
        try:
            n = int(kind[4:])
        except ValueError:
            n = 0
        if n < 300:
            raise UserError(f"--tokenizer {kind}: give the BPE vocabulary as bpe:N with N >= 300, e.g. bpe:4096")
        return BPETokenizer(n, texts)
    raise UserError(f"unknown tokenizer {kind!r} (use byte or bpe:N)")


@dataclass
class LoaderState:
    """Where the loader stands: sequences handed out so far (global, all ranks together)."""

    consumed: int = 0


class Loader:
    """Deterministic global batches of (inputs, targets) windows; see the module docstring.

    ``next_batch()`` returns this rank's part of the next micro-batch group: int64 arrays of shape
    (sequences, seq_len) for inputs and targets.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, seed: int):
        self.tokens = tokens
        self.seq_len = seq_len
        self.seed = seed
        self.n_windows = (len(tokens) - 1) // (seq_len + 1)
        if self.n_windows < 1:
            raise UserError(f"the data has {len(tokens)} tokens, fewer than one sequence of {seq_len + 1}; "
                            "give more text or a shorter --seq-len")
        self.state = LoaderState()
        self._perm_epoch = -1
        self._perm = np.empty(0, dtype=np.int64)

    def _window(self, k: int) -> np.ndarray:
        epoch, i = divmod(k, self.n_windows)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
            self._perm_epoch = epoch
        start = int(self._perm[i]) * (self.seq_len + 1)
        return self.tokens[start:start + self.seq_len + 1]

    def take(self, n_global: int, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Sequences ``first .. first+count`` of the next ``n_global`` ones (this rank's slice); advances the
        state by ``n_global``."""
        base = self.state.consumed
        rows = np.stack([self._window(base + first + j) for j in range(count)]).astype(np.int64)
        self.state.consumed += n_global
        return rows[:, :-1], rows[:, 1:]

    @property
    def epoch(self) -> float:
        return self.state.consumed / self.n_windows

    def state_dict(self) -> dict:
        return {"consumed": self.state.consumed, "seed": self.seed, "seq_len": self.seq_len,
                "n_windows": self.n_windows}

    def load_state_dict(self, sd: dict) -> None:
        if sd.get("seq_len") != self.seq_len or sd.get("n_windows") != self.n_windows:
            raise UserError(f"the checkpoint was written for other data (seq_len {sd.get('seq_len')}, "
                            f"{sd.get('n_windows')} windows; now {self.seq_len}, {self.n_windows}); "
                            "resume with the same --data, --tokenizer and --seq-len")
        self.state.consumed = int(sd["consumed"])


def build_data(source: str, tokenizer: str, seq_len: int, seed: int, text_key: str = "text"):
    """(tokenizer, loader) for a data source."""
    texts = read_texts(source, text_key)
    if not any(texts):
        raise UserError(f"data {source}: no text found")
    tok = make_tokenizer(tokenizer, texts)
    return tok, Loader(tok.encode_all(texts), seq_len, seed)
