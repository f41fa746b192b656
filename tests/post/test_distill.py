"""Distillation runs on the trainer's parts: a teacher of another size, both modes of sampling."""

import os

import jax
import numpy as np
import pytest

from post_helpers import tiny_model
from qwen3_jax.config import ConfigError
from qwen3_jax.post.distill import DistillSection, distill
from qwen3_jax.post.distill_loss import VocabularyMismatch
from qwen3_jax.train.config import config_from_dict

ONE = jax.devices()[:1]
MODEL = dict(vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=512, tie_word_embeddings=True,
             name="test-student")


def cfg(vocab=320):
    return config_from_dict({
        "model": {"config": dict(MODEL, vocab_size=vocab)}, "mesh": "data=1",
        "train": {"steps": 4, "batch_size": 4, "seq_len": 112, "loss_chunk": 32},
        "optimizer": {"lr": 3e-3, "warmup_steps": 0, "weight_decay": 0.0, "schedule": "constant"},
        "checkpoint": {"every": 4, "keep": 1},
        "log": {"every": 1, "tensorboard": False, "progress": False, "peak_flops": 1e11}})


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["off_policy", "on_policy"])
def test_distill_lowers_the_kl(tmp_path, small_tok, mode):
    teacher = tiny_model(320, seed=5, layers=3, hidden=48)
    # Sharper teacher logits (the tied head x 4; the first layer's RMSNorm undoes the input scale).
    teacher.params = {**teacher.params, "embed_tokens": {"embedding": 4.0 * teacher.params["embed_tokens"]["embedding"]}}
    # A fixed prompt set of one prompt: the same completions' KL is compared across steps.
    section = DistillSection.from_dict({"mode": mode, "prompts": ["synthetic:mixed:1"], "group_size": 4,
                                        "max_prompt_tokens": 100, "max_new_tokens": 8, "temperature": 0.0})
    _, recs = distill(cfg(), section, tmp_path / mode, teacher, quiet=True, devices=ONE, tokenizer=small_tok)
    kls = [r["loss"] for r in recs]
    assert len(kls) == 4 and all(np.isfinite(kls))
    # Off-policy: the teacher's greedy samples are the same batch every step. On-policy: the student's
    # greedy samples, which change as it learns; the KL on its own samples falls too.
    assert kls[-1] < kls[0], kls
    assert "rollout_tokens_per_second" in recs[0] and "response_length" in recs[0]


def test_teacher_with_another_vocabulary_is_refused(tmp_path, small_tok):
    with pytest.raises(VocabularyMismatch, match=r"teacher's vocabulary \(256 ids\) differs"):
        distill(cfg(), DistillSection(max_prompt_tokens=64, max_new_tokens=8), tmp_path / "r", tiny_model(256), devices=ONE, tokenizer=small_tok)
    assert not os.path.exists(tmp_path / "r")


@pytest.mark.slow
def test_teacher_on_its_own_mesh_gives_the_same_kl(tmp_path, small_tok):
    """distill.teacher_mesh: the teacher (a HF directory of another size) is sharded over its own mesh axes
    on the student's devices; the KL equals the one with an unsharded teacher."""
    from qwen3_jax.post.distill import load_teacher
    from qwen3_jax.sharding.mesh import make_mesh
    from qwen3_jax.testing import write_hf_checkpoint

    two = jax.devices()[:2]
    write_hf_checkpoint(tmp_path / "teacher", vocab_size=320)  # hidden 64, 3 layers: wider and deeper
    t = load_teacher(str(tmp_path / "teacher"), make_mesh("tensor=2", two))
    specs = {str(leaf.sharding.spec) for leaf in jax.tree.leaves(t.params)}
    assert any("tensor" in s for s in specs), specs  # really split over the teacher's axis
    c = cfg().to_dict()
    c["mesh"], c["train"]["steps"], c["checkpoint"]["every"] = "data=2", 2, 2
    kls = {}
    for name, mesh in (("own", "tensor=2"), ("shared", None)):
        section = DistillSection.from_dict({"mode": "off_policy", "prompts": ["synthetic:mixed:2"], "group_size": 2,
                                            "max_prompt_tokens": 100, "max_new_tokens": 8, "temperature": 0.0,
                                            "teacher_mesh": mesh})
        _, recs = distill(config_from_dict(c), section, tmp_path / name, str(tmp_path / "teacher"), quiet=True,
                          devices=two, tokenizer=small_tok)
        kls[name] = [r["loss"] for r in recs]
    assert len(kls["own"]) == 2 and kls["own"][0] > 0
    np.testing.assert_allclose(kls["own"], kls["shared"], rtol=1e-4)
    with pytest.raises(ConfigError, match=r"distill.teacher_mesh: mesh spec 'tensor=3' needs 3 devices, but 2"):
        distill(config_from_dict(c), DistillSection.from_dict({"teacher_mesh": "tensor=3", "max_prompt_tokens": 100,
                                                                   "max_new_tokens": 8}), tmp_path / "bad",
                str(tmp_path / "teacher"), devices=two, tokenizer=small_tok)
    assert not os.path.exists(tmp_path / "bad")


def test_teacher_with_another_tokenizer_of_the_same_size_is_refused(tmp_path, small_tok):
    """Same vocab_size, different tokens: the tokenizers that the two checkpoints carry are compared."""
    from qwen3_jax.post import synthetic
    from qwen3_jax.text.train_bpe import train_bpe

    # Another BPE of the same size: trained on the same kind of chats, spelled backwards.
    other = train_bpe([r["messages"][0]["content"][::-1] + " " + r["messages"][-1]["content"][::-1]
                       for r in synthetic.sft_records(300, seed=1)], len(small_tok))
    assert len(other) == len(small_tok)
    teacher = tiny_model(320)
    teacher.tokenizer = other
    small_tok.save(tmp_path / "student")  # the student's checkpoint dir: only its tokenizer is read before the refusal
    section = DistillSection(max_prompt_tokens=64, max_new_tokens=8)
    with pytest.raises(VocabularyMismatch, match=r"teacher's tokenizer \(320 tokens\) differs from the student's "
                                                 r"\(320 tokens\) at \d+ ids, first id \d+: teacher '.*', student"):
        distill(cfg(), section, tmp_path / "r", teacher, init_from=str(tmp_path / "student"), devices=ONE,
                tokenizer=small_tok)
    assert not os.path.exists(tmp_path / "r")
    from qwen3_jax.post.distill import checkpoint_tokenizer
    from qwen3_jax.post.distill_loss import check_vocabularies

    same = checkpoint_tokenizer(tmp_path / "student")
    check_vocabularies(teacher.config, teacher.config, same, small_tok)  # equal maps pass
    check_vocabularies(teacher.config, teacher.config, other, None)  # one side unknown: only vocab_size
    assert checkpoint_tokenizer(tmp_path / "nothing") is None
