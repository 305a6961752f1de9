"""Models catalog and Hugging Face config loading.

Parameter counts are held to the published ones. ModelSpec counts projection and embedding matrices exactly and
ignores norms, biases and learned position embeddings, so ours sit slightly below the published figure for
GPT-style models (GPT-3: -0.25%, mostly the 25M position embeddings); most published figures are also rounded
(to 0.1B, 1B or "70B"), which sets the tolerance of each row.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from megacluster import catalog
from megacluster.catalog import load, model, names
from megacluster.catalog.hf import model_from_file, model_from_hf_config
from megacluster.errors import UserError
from megacluster.specs import ModelSpec

HF = Path(__file__).parent / "data" / "hf"
B = 1e9

# id, published total, published active (None: not published or dense), relative tolerance, where the published figure is from
PUBLISHED = [
    ("gpt3-175b", 175.0 * B, None, 0.01, "Brown et al. 2020 Table 2.1"),
    ("megatron-gpt-175b", 175.0 * B, None, 0.01, "Korthikanti et al. 2022 Table 3"),
    ("megatron-gpt-22b", 22.0 * B, None, 0.01, "Korthikanti et al. 2022 Table 3"),
    # Narayanan et al. 2021 Table 1, rounded to 0.1B; the 1.7B row is 1.652B by the paper's own formula
    ("megatron-gpt-1.7b", 1.7 * B, None, 0.035, "Narayanan et al. 2021 Table 1"),
    ("megatron-gpt-3.6b", 3.6 * B, None, 0.02, "Narayanan et al. 2021 Table 1"),
    ("megatron-gpt-7.5b", 7.5 * B, None, 0.01, "Narayanan et al. 2021 Table 1"),
    ("megatron-gpt-18.4b", 18.4 * B, None, 0.005, "Narayanan et al. 2021 Table 1"),
    ("megatron-gpt-39.1b", 39.1 * B, None, 0.005, "Narayanan et al. 2021 Table 1"),
    ("megatron-gpt-76.1b", 76.1 * B, None, 0.005, "Narayanan et al. 2021 Table 1"),
    ("megatron-gpt-145.6b", 145.6 * B, None, 0.005, "Narayanan et al. 2021 Table 1"),
    ("megatron-gpt-310.1b", 310.1 * B, None, 0.005, "Narayanan et al. 2021 Table 1"),
    ("megatron-gpt-529.6b", 529.6 * B, None, 0.005, "Narayanan et al. 2021 Table 1"),
    ("megatron-gpt-1t", 1008.0 * B, None, 0.005, "Narayanan et al. 2021 Table 1"),
    # Megatron-Core README table; FFN width and embedding tying are assumed (see models.yaml)
    ("megatron-core-gpt-1.7b", 1.7 * B, None, 0.03, "Megatron-LM README"),
    ("megatron-core-gpt-7.1b", 7.1 * B, None, 0.03, "Megatron-LM README"),
    ("megatron-core-gpt-16b", 16 * B, None, 0.03, "Megatron-LM README"),
    ("megatron-core-gpt-32b", 32 * B, None, 0.03, "Megatron-LM README"),
    ("megatron-core-gpt-119b", 119 * B, None, 0.03, "Megatron-LM README"),
    ("megatron-core-gpt-177b", 177 * B, None, 0.03, "Megatron-LM README"),
    ("megatron-core-gpt-462b", 462 * B, None, 0.03, "Megatron-LM README"),
    ("mt-nlg-530b", 530 * B, None, 0.01, "Smith et al. 2022"),
    ("bloom-176b", 176.247271424 * B, None, 0.005, "bigscience/bloom model card"),
    ("opt-175b", 175 * B, None, 0.01, "Zhang et al. 2022 Table 1"),
    ("gpt-neox-20b", 20.55456768 * B, None, 0.005, "Black et al. 2022"),
    ("llama2-7b", 6.74 * B, None, 0.005, "Llama-2-7b-hf checkpoint"),
    ("llama2-13b", 13.0 * B, None, 0.005, "Llama-2-13b-hf checkpoint"),
    # the paper's "70B" is rounded up: the checkpoint holds 68.98B
    ("llama2-70b", 70 * B, None, 0.02, "Touvron et al. 2023 Table 1"),
    ("llama3-8b", 8.03 * B, None, 0.005, "Meta-Llama-3-8B checkpoint"),
    ("llama3-70b", 70.6 * B, None, 0.005, "Meta-Llama-3-70B checkpoint"),
    ("llama3.1-8b", 8.03 * B, None, 0.005, "Llama-3.1-8B checkpoint"),
    ("llama3.1-70b", 70.6 * B, None, 0.005, "Llama-3.1-70B checkpoint"),
    ("llama3.1-405b", 405.9 * B, None, 0.005, "Llama-3.1-405B checkpoint"),
    ("llama3.2-1b", 1.23 * B, None, 0.01, "Llama 3.2 model card"),
    ("nemotron4-340b", 341.0 * B, None, 0.005, "Nemotron-4 340B report: 9.4B embedding + 331.6B"),
    ("mixtral-8x7b", 46.7 * B, 12.9 * B, 0.005, "Mistral AI, Mixtral of experts"),
    ("mixtral-8x22b", 141 * B, 39 * B, 0.01, "Mistral AI, Mixtral 8x22B"),
    ("grok-1", 314 * B, None, 0.01, "xai-org/grok-1 README"),
    ("llama4-maverick", 400 * B, 17 * B, 0.02, "Llama 4 model card (17B active, 400B total)"),
    ("llama4-behemoth", 2000 * B, 288 * B, 0.02, "Meta AI, The Llama 4 herd (288B active, nearly 2T total)"),
    # DeepSeek's 37B counts the output head but not the input embedding (see test_deepseek_v3_active)
    ("deepseek-v3", 671 * B, 37 * B, 0.02, "DeepSeek-V3 report"),
    ("deepseek-v2", 236 * B, 21 * B, 0.02, "DeepSeek-V2 report section 3.1.2: 236B total, 21B activated"),
    ("qwen1.5-moe-a2.7b", 14.3 * B, 2.7 * B, 0.01, "Qwen1.5-MoE-A2.7B model card"),
    ("gpt2-124m", 0.124 * B, None, 0.01, "openai-community/gpt2 model card"),
    ("gpt2-355m", 0.355 * B, None, 0.01, "openai-community/gpt2-medium model card"),
]


# ------------------------------------------------------------------------------------------ catalog
def test_every_catalog_model_loads_and_is_checked():
    ids = names("models")
    checked = {row[0] for row in PUBLISHED}
    assert set(ids) == checked, "every catalog model has a published parameter count in PUBLISHED"
    for i in ids:
        assert isinstance(model(i), ModelSpec)


def test_required_models_present():
    required = ["gpt3-175b", "mt-nlg-530b", "bloom-176b", "opt-175b", "gpt-neox-20b", "llama2-7b", "llama2-13b",
                "llama2-70b", "llama3-8b", "llama3-70b", "llama3.1-8b", "llama3.1-70b", "llama3.1-405b",
                "llama3-405b", "nemotron4-340b", "mixtral-8x7b", "mixtral-8x22b", "grok-1", "deepseek-v3",
                "megatron-gpt-1t"]
    for i in required:
        model(i)


def test_entries_have_sources_and_kebab_ids():
    kebab = re.compile(r"^[a-z0-9]+(?:[.-][a-z0-9]+)*$")
    seen: set[str] = set()
    for e in load("models")["models"]:
        assert len(e.get("source", "")) > 20, f"{e['id']} needs a source"
        for name in [e["id"], *(e.get("aliases") or [])]:
            assert kebab.match(name), name
            assert name not in seen, f"duplicate id or alias {name}"
            seen.add(name)


def test_alias_llama3_405b():
    assert model("llama3-405b") == model("llama3.1-405b")
    assert model("llama3-405b").name == "Llama 3.1 405B"


def test_unknown_model_suggests_nearest():
    with pytest.raises(UserError, match="did you mean 'llama3.1-405b'"):
        model("llama3.1-450b")


# ------------------------------------------------------------------------------------ parameter counts
@pytest.mark.parametrize("mid, total, active, tol, where", PUBLISHED, ids=[r[0] for r in PUBLISHED])
def test_params_match_published(mid, total, active, tol, where):
    m = model(mid)
    assert m.params_total == pytest.approx(total, rel=tol), f"{mid}: {m.params_total / B:.3f}B vs {where}"
    if m.moe is None:
        assert m.params_active == m.params_total
    if active is not None:
        assert m.params_active == pytest.approx(active, rel=tol), f"{mid}: active {m.params_active / B:.3f}B"


@pytest.mark.parametrize("mid", [r[0] for r in PUBLISHED if r[0].startswith("megatron-gpt-")
                                 and r[0] not in ("megatron-gpt-22b", "megatron-gpt-175b")])
def test_megatron_2021_matches_paper_formula(mid):
    """Narayanan et al. 2021 eq. (2): P = 12 l h^2 (1 + 13/(12h) + (V + s)/(12 l h)); it adds biases, norms and
    position embeddings (13 l h + s h), which ModelSpec ignores: < 0.5%."""
    m = model(mid)
    l, h, v, s = m.n_layers, m.d_model, m.vocab, m.seq_len
    paper = 12 * l * h * h * (1 + 13 / (12 * h) + (v + s) / (12 * l * h))
    assert m.params_total == pytest.approx(paper, rel=0.005)
    assert m.params_total < paper


def test_nemotron_embedding_split():
    """Nemotron-4 340B report: 9.4B embedding and 331.6B non-embedding parameters."""
    m = model("nemotron4-340b")
    assert m.embedding_params == pytest.approx(9.4 * B, rel=0.005)
    assert m.params_total - m.embedding_params == pytest.approx(331.6 * B, rel=0.001)


def test_deepseek_v3_attention_shapes():
    """MLA per layer from the checkpoint's tensor shapes: q_a 7168x1536, q_b 1536x(128*192), kv_a 7168x(512+64),
    kv_b 512x(128*(128+128)), o (128*128)x7168."""
    m = model("deepseek-v3")
    expected = 7168 * 1536 + 1536 * 128 * 192 + 7168 * 576 + 512 * 128 * 256 + 128 * 128 * 7168
    assert m.attn_params == expected == 187_105_280
    assert m.n_moe_layers == 58 and m.n_dense_ffn_layers == 3
    assert m.hd == 128


def test_deepseek_v3_active():
    """DeepSeek-V3's README_WEIGHTS: 36.6B activated parameters including the 0.9B output head; ours also
    counts the input embedding (0.93B)."""
    m = model("deepseek-v3")
    assert m.params_active - m.vocab * m.d_model == pytest.approx(36.6 * B, rel=0.005)


def test_grok1_active_fraction():
    """xAI's Grok-1 release: about 25% of the weights are active on a given token (ours: 26.5%)."""
    m = model("grok-1")
    assert m.params_active / m.params_total == pytest.approx(0.25, abs=0.02)


def test_moe_counting_by_hand():
    """Shared experts, leading dense layers, MoE frequency and the router, counted by hand."""
    m = ModelSpec(name="t", n_layers=6, d_model=8, n_heads=2, ffn_hidden=32, vocab=10, mlp="swiglu",
                  moe=dict(n_experts=4, top_k=2, expert_ffn_hidden=4, n_shared_experts=1, shared_ffn_hidden=12,
                           n_dense_layers=2, moe_layer_freq=2))
    attn = 4 * 8 * 8
    moe_layers = 2  # layers 2 and 4 of the four after the dense ones
    dense_ffn = (6 - moe_layers) * 3 * 8 * 32
    per_moe = 3 * 8 * 12 + 8 * 4  # shared expert + router
    experts = moe_layers * 4 * 3 * 8 * 4
    emb = 2 * 10 * 8
    assert m.n_moe_layers == moe_layers
    assert m.params_total == 6 * attn + dense_ffn + moe_layers * per_moe + experts + emb
    assert m.params_active == 6 * attn + dense_ffn + moe_layers * per_moe + moe_layers * 2 * 3 * 8 * 4 + emb


# ------------------------------------------------------------------------------ Hugging Face configs
CATALOG_TWINS = [("Llama-3.1-8B", "llama3.1-8b"), ("Mixtral-8x7B-v0.1", "mixtral-8x7b"),
                 ("DeepSeek-V3", "deepseek-v3"), ("Qwen1.5-MoE-A2.7B", "qwen1.5-moe-a2.7b")]


@pytest.mark.parametrize("folder, mid", CATALOG_TWINS)
def test_hf_config_matches_catalog(folder, mid):
    got = model_from_file(HF / folder / "config.json")
    want = model(mid)
    skip = {"name", "source", "seq_len"}
    assert got.model_dump(exclude=skip) == want.model_dump(exclude=skip)
    # the training context: the config's original one, else its maximum capped at 8,192 (Mixtral's catalog
    # entry keeps its published 32K; the config alone cannot tell)
    assert got.seq_len == min(want.seq_len, 8192)
    assert got.name == json.loads((HF / folder / "config.json").read_text())["model_type"]  # not the folder
    assert "config.json" in got.source


def test_hf_config_seq_len_is_not_the_maximum_context(tmp_path):
    """A config without rope_scaling states only its longest context (131,072 for Llama 3.1): the training
    context defaults to 8,192, and the name comes from the config, not the folder ("tmp...")."""
    data = json.loads((HF / "Llama-3.1-8B" / "config.json").read_text())
    data.pop("rope_scaling")
    f = tmp_path / "config.json"
    f.write_text(json.dumps(data))
    m = model_from_file(f)
    assert m.seq_len == 8192 and m.name == "llama"
    data["_name_or_path"] = "meta-llama/Llama-3.1-8B"
    data["max_position_embeddings"] = 4096
    f.write_text(json.dumps(data))
    m = model_from_file(f)
    assert m.seq_len == 4096 and m.name == "meta-llama/Llama-3.1-8B"


# folder, published total, published active, tolerance, where
HF_PUBLISHED = [
    ("Mistral-7B-v0.1", 7.24 * B, None, 0.005, "Mistral-7B-v0.1 checkpoint"),
    ("Qwen2.5-7B", 7.61 * B, None, 0.005, "Qwen2.5-7B model card"),
    ("Qwen3-0.6B", 0.6 * B, None, 0.01, "Qwen3-0.6B model card"),
    ("Qwen3-30B-A3B", 30.5 * B, 3.3 * B, 0.02, "Qwen3-30B-A3B model card"),
]


@pytest.mark.parametrize("folder, total, active, tol, where", HF_PUBLISHED, ids=[r[0] for r in HF_PUBLISHED])
def test_hf_config_params(folder, total, active, tol, where):
    m = model_from_file(HF / folder)  # a checkpoint folder works too
    assert m.params_total == pytest.approx(total, rel=tol)
    if active is not None:
        assert m.params_active == pytest.approx(active, rel=tol)


def test_hf_shapes():
    llama = model_from_file(HF / "Llama-3.1-8B" / "config.json")
    assert (llama.n_kv_heads, llama.seq_len, llama.mlp, llama.tied_embeddings) == (8, 8192, "swiglu", False)
    qwen3 = model_from_file(HF / "Qwen3-0.6B" / "config.json")
    assert qwen3.head_dim == 128 and qwen3.hd == 128 and qwen3.tied_embeddings  # 16 x 128 != 1024
    assert qwen3.params_total - qwen3.embedding_params == pytest.approx(0.44 * B, rel=0.01)
    mistral = model_from_file(HF / "Mistral-7B-v0.1" / "config.json")
    assert mistral.head_dim is None and mistral.seq_len == 8192  # max_position_embeddings 32768, capped
    ds = model_from_file(HF / "DeepSeek-V3" / "config.json")
    assert ds.seq_len == 4096 and ds.mla.kv_lora_rank == 512 and ds.moe.n_dense_layers == 3


def test_catalog_model_accepts_paths():
    assert model(str(HF / "Mixtral-8x7B-v0.1" / "config.json")).moe.n_experts == 8
    assert model(str(HF / "Mixtral-8x7B-v0.1")).moe.top_k == 2


def test_model_type_without_architectures():
    cfg = json.loads((HF / "Llama-3.1-8B" / "config.json").read_text())
    del cfg["architectures"]
    assert model_from_hf_config(cfg, "x").params_total == model("llama3.1-8b").params_total


def test_qwen_sparse_step():
    """decoder_sparse_step 2: layers 1, 3, 5, ... (0-based) are MoE."""
    cfg = json.loads((HF / "Qwen1.5-MoE-A2.7B" / "config.json").read_text())
    cfg["decoder_sparse_step"] = 2
    m = model_from_hf_config(cfg, "x")
    assert m.n_moe_layers == 12 and m.n_dense_ffn_layers == 12


def test_model_yaml(tmp_path):
    p = tmp_path / "my-model.yaml"
    p.write_text("id: my-model\nn_layers: 4\nd_model: 256\nn_heads: 4\nffn_hidden: 1024\nvocab: 1000\n"
                 "mlp: swiglu\nmoe: {n_experts: 4, top_k: 1, expert_ffn_hidden: 512}\n")
    m = model(str(p))
    assert m.name == "my-model" and m.moe.n_experts == 4 and m.seq_len == 2048
    j = tmp_path / "m.json"
    j.write_text(json.dumps({"name": "J", "n_layers": 2, "d_model": 64, "n_heads": 2, "ffn_hidden": 256,
                             "vocab": 100}))
    assert model_from_file(j).name == "J"


# ------------------------------------------------------------------------------------------ bad input
def _config(tmp_path: Path, folder: str, **changes) -> Path:
    """A copy of a fixture with keys changed (value None: key removed)."""
    cfg = json.loads((HF / folder / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    p = tmp_path / folder / "config.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(cfg))
    return p


def _error(path) -> str:
    with pytest.raises(UserError) as e:
        model_from_file(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg or "file not found" in msg
    return msg


@pytest.mark.parametrize("changes, expected", [
    ({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}, "unsupported architecture GPT2LMHeadModel"),
    ({"architectures": None, "model_type": None}, "no 'architectures' or 'model_type' key"),
    ({"architectures": "LlamaForCausalLM"}, "'architectures' must be a list"),
    ({"hidden_size": None}, "missing key 'hidden_size'"),
    ({"vocab_size": None}, "missing key 'vocab_size'"),
    ({"num_hidden_layers": 0}, "num_hidden_layers must be positive, got 0"),
    ({"vocab_size": -5}, "vocab_size must be positive, got -5"),
    ({"intermediate_size": 14336.5}, "intermediate_size must be a whole number"),
    ({"hidden_size": "4096"}, "hidden_size must be a whole number"),
    ({"num_key_value_heads": 5}, "num_attention_heads 32 is not divisible by num_key_value_heads 5"),
    ({"num_attention_heads": 24, "num_key_value_heads": 24}, "hidden_size 4096 is not divisible by num_attention_heads 24"),
    ({"tie_word_embeddings": "no"}, "tie_word_embeddings must be true or false"),
    ({"rope_scaling": {"original_max_position_embeddings": -1}}, "original_max_position_embeddings must be"),
])
def test_bad_llama_config(tmp_path, changes, expected):
    msg = _error(_config(tmp_path, "Llama-3.1-8B", **changes))
    assert expected in msg
    assert "LlamaForCausalLM" in msg or "architecture" in msg


@pytest.mark.parametrize("folder, changes, expected", [
    ("Mixtral-8x7B-v0.1", {"num_local_experts": None}, "missing key 'num_local_experts'"),
    ("Mixtral-8x7B-v0.1", {"num_experts_per_tok": 9}, "num_experts_per_tok 9 is larger than num_local_experts 8"),
    ("DeepSeek-V3", {"q_lora_rank": None}, "q_lora_rank is null"),
    ("DeepSeek-V3", {"num_experts_per_tok": 300}, "larger than n_routed_experts 256"),
    ("Qwen3-30B-A3B", {"num_experts": -1}, "num_experts must be positive"),
    ("DeepSeek-V3", {"kv_lora_rank": 0}, "kv_lora_rank must be positive"),
    ("DeepSeek-V3", {"first_k_dense_replace": -1}, "first_k_dense_replace must be >= 0"),
    ("Qwen3-30B-A3B", {"mlp_only_layers": [0, 1]}, "mlp_only_layers"),
])
def test_bad_moe_config(tmp_path, folder, changes, expected):
    assert expected in _error(_config(tmp_path, folder, **changes))


def test_malformed_json(tmp_path):
    p = tmp_path / "config.json"
    p.write_text('{"architectures": ["LlamaForCausalLM"], "hidden_size": 4096,}')
    assert "malformed JSON at line 1" in _error(p)


def test_malformed_yaml(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("n_layers: [4\nd_model: 8\n")
    assert "malformed YAML" in _error(p)


def test_not_a_mapping(tmp_path):
    p = tmp_path / "config.json"
    p.write_text("[1, 2]")
    assert "expected a mapping" in _error(p)
    e = tmp_path / "empty.yaml"
    e.write_text("")
    assert "got empty" in _error(e)


def test_missing_file_and_folder(tmp_path):
    assert "file not found" in _error(tmp_path / "nope.json")
    shutil.copytree(HF / "Qwen3-0.6B", tmp_path / "ckpt")
    (tmp_path / "ckpt" / "config.json").unlink()
    assert "file not found" in _error(tmp_path / "ckpt")


@pytest.mark.parametrize("text, expected", [
    ("n_layers: 0\nd_model: 8\nn_heads: 2\nffn_hidden: 8\nvocab: 10\n", "n_layers: Input should be greater than 0"),
    ("n_layers: 2\nd_model: 10\nn_heads: 3\nffn_hidden: 8\nvocab: 10\n", "d_model 10 is not divisible by n_heads 3"),
    ("n_layers: 2\nd_model: 8\nn_heads: 2\nffn_hidden: 8\nvocab: 10\nwidth: 3\n", "width: Extra inputs"),
    ("n_layers: 2\nd_model: 8\nn_heads: 2\nffn_hidden: 8\nvocab: 10\nmlp: tanh\n", "mlp: Input should be"),
    ("n_layers: 2\nd_model: 8\nn_heads: 2\nffn_hidden: 8\n", "vocab: Field required"),
])
def test_bad_model_yaml(tmp_path, text, expected):
    p = tmp_path / "m.yaml"
    p.write_text(text)
    msg = _error(p)
    assert expected in msg
    assert msg.count(str(p)) == 1


def test_catalog_entry_error_is_user_error(monkeypatch):
    """A broken catalog entry is reported as one line, not a traceback."""
    broken = {"models": [{"id": "x", "name": "x", "n_layers": -1, "d_model": 8, "n_heads": 2, "ffn_hidden": 8,
                          "vocab": 10, "source": "test"}]}
    monkeypatch.setattr(catalog, "load", lambda name: broken)
    with pytest.raises(UserError, match="model x: n_layers"):
        catalog.model("x")
