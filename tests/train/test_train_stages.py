"""Every train config loads; the tiny three-stage chain runs end to end through the CLI (stage 3 at a
longer sequence with the raised RoPE base) and its checkpoint exports to a Hugging Face directory
that transformers loads with the same logits, with the tokenizer the runs encoded their data with."""

import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from qwen3_jax.cli.main import main
from qwen3_jax.model.transformer import Qwen3
from qwen3_jax.train.checkpoint import ParamSource
from qwen3_jax.train.config import load_config
from qwen3_jax.train.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, "configs", "train")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CONFIGS, "*.yaml"))), ids=os.path.basename)
def test_every_train_config_loads(path):
    cfg = load_config(path)
    name = os.path.basename(path)
    mc = cfg.model_config()
    stage = name.split("stage")[1][0]
    if stage in "12":
        assert mc.rope_theta == 10_000.0
    else:
        assert mc.rope_theta == 1_000_000.0
    if not name.startswith("tiny"):
        assert cfg.train.seq_len == {"1": 4096, "2": 4096, "3": 32768}[stage]
        assert cfg.model.dtype == "bfloat16" and cfg.model.param_dtype == "float32"
    else:
        assert mc.name == "tiny-dense" and all(s["path"].startswith("synthetic:") for s in cfg.data["sources"])


def _tensors(path):
    from safetensors.numpy import load_file

    out = {}
    for f in glob.glob(os.path.join(path, "*.safetensors")):
        out.update(load_file(f))
    return out


@pytest.mark.slow
def test_tiny_three_stage_chain_exports_to_transformers(tmp_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from qwen3_jax.text.tokenizer import Tokenizer

    runs = [str(tmp_path / f"s{i}") for i in (1, 2, 3)]
    steps = (3, 2, 2)
    for i, (run, n) in enumerate(zip(runs, steps)):
        args = ["train", "--config", os.path.join(CONFIGS, f"tiny_stage{i + 1}.yaml"), "--run-dir", run,
                "--steps", str(n), "--quiet", "--set", "log.every=1"]
        if i:
            args += ["--init-from", runs[i - 1]]
        if i == 2:  # stage 3's rows are 512 tokens; 256 (2x stage 1-2) keeps the test short
            args += ["--set", "train.seq_len=256"]
        assert main(args) == 0
        ms = read_metrics(run)
        assert [m["step"] for m in ms] == list(range(1, n + 1)) and all(np.isfinite(m["loss"]) for m in ms)
        assert os.path.isfile(os.path.join(run, "tokenizer.json"))  # the run records its tokenizer
    # Stage 3: longer rows and the ABF RoPE base; it started from stage 2's params, not from scratch.
    meta = json.load(open(os.path.join(runs[2], "checkpoints", "2", "meta", "metadata")))
    assert meta["config"]["train"]["seq_len"] == 2 * 128 and meta["model_config"]["rope_theta"] == 1e6
    # Two Adam steps at lr <= 1e-3 move each weight by at most ~2e-3; a fresh N(0, 0.02) init would
    # differ from stage 2's weights by ~0.1 somewhere.
    e2 = ParamSource(runs[1]).read(("embed_tokens", "embedding"))
    e3 = ParamSource(runs[2]).read(("embed_tokens", "embedding"))
    assert 0 < float(np.abs(e3 - e2).max()) < 5e-3

    out = str(tmp_path / "hf")
    assert main(["export", runs[2], out, "--quiet"]) == 0
    hf = AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    assert hf.config.rope_theta == 1e6 if hasattr(hf.config, "rope_theta") else True
    src = ParamSource(runs[2])
    params = {}
    for path in src.saved:
        node = params
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = jnp.asarray(src.read(path))
    ids = np.array([[9707, 1879, 11, 358, 1079, 264, 8251, 13]], np.int64)
    ours = Qwen3(src.config).apply({"params": params}, jnp.asarray(ids, jnp.int32)).logits
    with torch.no_grad():
        theirs = hf(torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=2e-4, rtol=1e-4)

    # The pretraining pipeline encodes with the Qwen3 tokenizer; the exported directory carries it
    # (with its chat template) and transformers' AutoTokenizer encodes and renders as ours does.
    ours_tok = Tokenizer.qwen3()

    def check_tokenizer(directory):
        theirs_tok = AutoTokenizer.from_pretrained(directory)
        for text in TEXTS:
            assert theirs_tok(text, add_special_tokens=False)["input_ids"] == ours_tok.encode(text), text
        assert len(theirs_tok) == len(ours_tok)
        chat = [{"role": "user", "content": "What is 2+2?"}]
        for think in (True, False):
            assert theirs_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True,
                                                  enable_thinking=think) == \
                ours_tok.apply_chat_template(chat, add_generation_prompt=True, enable_thinking=think)
        gen = GenerationConfig.from_pretrained(directory)
        assert sorted(gen.eos_token_id) == sorted(theirs_tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"]))

    check_tokenizer(out)
    # A run directory written before runs recorded their tokenizer: recovered from its config's
    # pretraining data section. One whose config names none exports without one, and says so.
    for f in ("tokenizer.json", "tokenizer_config.json"):
        os.remove(os.path.join(runs[2], f))
    capsys.readouterr()
    assert main(["export", runs[2], str(tmp_path / "hf_old"), "--quiet"]) == 0
    check_tokenizer(str(tmp_path / "hf_old"))
    assert "tokenizer" not in capsys.readouterr().err
    cfg_path = os.path.join(runs[2], "config.yaml")
    with open(cfg_path, encoding="utf-8") as f:
        stored = yaml.safe_load(f)
    with open(cfg_path, "w", encoding="utf-8") as f:
        yaml.safe_dump({**stored, "data": {}}, f)
    assert main(["export", runs[2], str(tmp_path / "hf_none"), "--quiet"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "tokenizer" in line]
    assert len(notes) == 1 and "no tokenizer written" in notes[0], notes
    assert not {"tokenizer.json", "tokenizer_config.json"} & set(os.listdir(tmp_path / "hf_none"))


TEXTS = ("Hello, world! It's 2+2=4, isn't it?\n\n  indented\tline",
         "Déjà vu: 日本語のテキスト, emoji 🙂 and <|im_start|>user\n<think>\nhm\n</think>\n<|im_end|>")
