"""SFT on the trainer: the loss mask hook, resume equals an uninterrupted run, bad input, --init-from HF."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qwen3_jax.config import ConfigError
from qwen3_jax.post import sft_data
from qwen3_jax.post.sft import sft
from qwen3_jax.train.config import config_from_dict
from qwen3_jax.train.loop import make_run_mesh
from qwen3_jax.train.metrics import read_metrics
from qwen3_jax.train.step import BATCH_KEYS, LOSS_MASK, build_train_step

ONE = jax.devices()[:1]
MODEL = dict(vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=512, tie_word_embeddings=False,
             name="test-sft")


def sft_config(tok_dir, **data):
    return config_from_dict({
        "model": {"config": dict(MODEL)}, "mesh": "data=1",
        "train": {"steps": 6, "batch_size": 4, "seq_len": 128, "loss_chunk": 32},
        "optimizer": {"lr": 3e-3, "warmup_steps": 1, "weight_decay": 0.0},
        "checkpoint": {"every": 3, "keep": 2},
        "log": {"every": 1, "tensorboard": False, "progress": False, "peak_flops": 1e11},
        "data": {"paths": ["synthetic:fusion:60"], "tokenizer": str(tok_dir), **data}})


@pytest.fixture(scope="module")
def tok_dir(small_tok, tmp_path_factory):
    return small_tok.save(tmp_path_factory.mktemp("tok"))


def test_loss_mask_restricts_the_loss_to_marked_targets(tmp_path, tok_dir):
    cfg = sft_config(tok_dir)
    mesh = make_run_mesh(cfg, ONE)
    plain = build_train_step(cfg, mesh)
    masked = build_train_step(cfg, mesh, batch_keys=BATCH_KEYS + (LOSS_MASK,))
    rng = np.random.default_rng(0)
    batch = {"tokens": rng.integers(0, 320, (4, 128)).astype(np.int32),
             "segment_ids": np.ones((4, 128), np.int32), "positions": np.tile(np.arange(128, dtype=np.int32), (4, 1))}
    mask = (rng.random((4, 128)) < 0.3).astype(np.int32)
    _, m_plain = plain(plain.init_state(), plain.place_batch(batch))
    _, m_ones = masked(masked.init_state(), masked.place_batch({**batch, LOSS_MASK: np.ones_like(mask)}))
    np.testing.assert_allclose(m_ones["loss"], m_plain["loss"], rtol=1e-6)
    state = masked.init_state()
    params = jax.device_get(state["params"])
    _, m = masked(state, masked.place_batch({**batch, LOSS_MASK: mask}))
    logits = masked.module.apply({"params": params}, jnp.asarray(batch["tokens"])).logits
    logp = jax.nn.log_softmax(logits[:, :-1], -1)
    nll = -jnp.take_along_axis(logp, jnp.asarray(batch["tokens"])[:, 1:, None], -1)[..., 0]
    w = mask[:, :-1]
    np.testing.assert_allclose(m["loss"], float((nll * w).sum() / w.sum()), rtol=1e-5)
    assert float(m["target_tokens"]) == w.sum()


def test_sft_resume_equals_uninterrupted(tmp_path, tok_dir):
    cfg = sft_config(tok_dir)
    full = sft(cfg, tmp_path / "full", quiet=True, devices=ONE)
    st = full.data_stats
    assert st.kept > 0 and st.kept + st.dropped_overlong == st.samples
    part = sft(cfg, tmp_path / "part", quiet=True, devices=ONE, stop_at=3)
    assert part.step == 3
    rest = sft(cfg, tmp_path / "part", quiet=True, devices=ONE)
    assert rest.resumed_from == 3 and rest.step == 6
    a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "part")
    assert [r["step"] for r in b] == list(range(1, 7))
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # bitwise
    assert a[-1]["loss"] < a[0]["loss"]
    # The data's counts are in every record (a resumed run's too); this config drops some.
    assert st.dropped_overlong > 0 and {(r["data/conversations"], r["data/dropped_overlong"]) for r in a + b} == \
        {(st.kept, st.dropped_overlong)}


def test_sft_run_exports_its_tokenizer(tmp_path, tok_dir, small_tok):
    """An SFT run with its own tokenizer records it; the run's export carries it, and transformers'
    AutoTokenizer encodes and renders as the tokenizer the run trained with. A run directory from
    before runs recorded their tokenizer gets it from its config's data.tokenizer."""
    from transformers import AutoTokenizer, GenerationConfig

    from qwen3_jax.checkpoint.export import export

    run = tmp_path / "run"
    sft(sft_config(tok_dir), run, quiet=True, devices=ONE, stop_at=1)
    text = "What is 12+7? <think>\n12+7=19\n</think>\n\nThe answer is 19.<|im_end|>"
    chat = [{"role": "user", "content": "What is 12+7?"}]
    for name in ("hf", "hf_old"):
        if name == "hf_old":
            for f in ("tokenizer.json", "tokenizer_config.json"):
                os.remove(run / f)
        export(run, tmp_path / name, progress=False)
        theirs = AutoTokenizer.from_pretrained(tmp_path / name)
        assert theirs(text, add_special_tokens=False)["input_ids"] == small_tok.encode(text)
        assert theirs.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == \
            small_tok.apply_chat_template(chat, add_generation_prompt=True)
        eos = GenerationConfig.from_pretrained(tmp_path / name).eos_token_id
        assert sorted(eos) == sorted(theirs.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"]))


def test_bad_sft_input_writes_nothing(tmp_path, tok_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(sft_data.SFTDataError, match="bad.jsonl:1: the conversation has no assistant turn"):
        sft(sft_config(tok_dir, paths=[str(bad)]), tmp_path / "r1", quiet=True, devices=ONE)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['sources'\]"):
        sft(sft_config(tok_dir, sources=[]), tmp_path / "r2", quiet=True, devices=ONE)
    with pytest.raises(sft_data.SFTDataError, match="more than seq_len 16"):
        cfg = sft_config(tok_dir, overlong="error")
        sft(config_from_dict({**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "seq_len": 16}}),
            tmp_path / "r3", quiet=True, devices=ONE)
    assert not any(os.path.exists(tmp_path / r) for r in ("r1", "r2", "r3"))


def test_cli_exit_2_on_bad_line(tmp_path, tok_dir):
    import yaml

    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    cfg = sft_config(tok_dir, paths=[str(bad)]).to_dict()
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    p = subprocess.run([sys.executable, "-m", "qwen3_jax.cli.main", "sft", "--config", str(tmp_path / "c.yaml"),
                        "--run-dir", str(tmp_path / "run"), "--quiet"], capture_output=True, text=True, env=env)
    assert p.returncode == 2, p.stderr
    assert "bad.jsonl:1: not valid JSON" in p.stderr and "Traceback" not in p.stderr
    assert not os.path.exists(tmp_path / "run")


def test_init_from_a_hugging_face_directory(tmp_path):
    from qwen3_jax.api import load
    from qwen3_jax.testing import write_hf_checkpoint
    from qwen3_jax.train.checkpoint import init_params_from_any
    from qwen3_jax.checkpoint.safetensors_io import CheckpointError

    write_hf_checkpoint(tmp_path / "hf", vocab_size=320, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=16, num_hidden_layers=2)
    cfg = config_from_dict({"model": {"config": dict(MODEL)}, "mesh": "data=1"})
    ts = build_train_step(cfg, make_run_mesh(cfg, ONE))
    params = init_params_from_any(str(tmp_path / "hf"), ts.abstract_state()["params"])
    ref = load(str(tmp_path / "hf")).params
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    wide = config_from_dict({"model": {"config": dict(MODEL, hidden_size=64)}, "mesh": "data=1"})
    ts2 = build_train_step(wide, make_run_mesh(wide, ONE))
    with pytest.raises(CheckpointError, match="params do not fit this model"):
        init_params_from_any(str(tmp_path / "hf"), ts2.abstract_state()["params"])
    with pytest.raises(CheckpointError, match="no complete training checkpoint there, and not an Orbax"):
        init_params_from_any(str(tmp_path), ts2.abstract_state()["params"])
