"""GRPO rollouts on the compiled engine, and a few GRPO updates raising a toy reward."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from post_helpers import tiny_model
from qwen3_jax.generate.engine import Engine
from qwen3_jax.generate.sampling import Sampling
from qwen3_jax.post import grpo_loss as G
from qwen3_jax.post import logprobs as LP
from qwen3_jax.post import rewards, rollout, synthetic


def test_assemble_masks_completion_positions():
    tokens, seg, pos, mask = rollout.assemble([[5, 6, 7], [8]], [[1, 2], [3, 4, 9]], seq_len=6)
    np.testing.assert_array_equal(tokens, [[5, 6, 7, 1, 2, 0], [8, 3, 4, 9, 0, 0]])
    np.testing.assert_array_equal(seg, [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(pos, [[0, 1, 2, 3, 4, 0], [0, 1, 2, 3, 0, 0]])
    # position t scores token t + 1: the last prompt position scores the first completion token
    np.testing.assert_array_equal(mask, [[0, 0, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]])
    with pytest.raises(ValueError, match="exceed seq_len 3"):
        rollout.assemble([[1, 2]], [[3, 4]], seq_len=3)


def test_prompt_set_checks(small_tok):
    recs = synthetic.prompt_records(4, seed=0)
    ps = rollout.PromptSet.from_records(recs, small_tok, max_prompt_tokens=128)
    assert len(ps) == 4 and ps.columns["answer"] == [r["answer"] for r in recs]
    assert small_tok.decode(ps.ids[0]).endswith("<|im_start|>assistant\n")
    short = rollout.PromptSet.from_records(recs, small_tok, max_prompt_tokens=min(len(i) for i in ps.ids))
    assert short.dropped_overlong + len(short) == 4 and short.dropped_overlong >= 1
    with pytest.raises(rollout.PromptError, match="more than max_prompt_tokens 3"):
        rollout.PromptSet.from_records(recs, small_tok, 3, overlong="error")
    with pytest.raises(rollout.PromptError, match="prompt 0: ends with an assistant turn"):
        rollout.PromptSet.from_records([{"messages": [{"role": "user", "content": "a"},
                                                      {"role": "assistant", "content": "b"}]}], small_tok, 128)
    with pytest.raises(rollout.PromptError, match="prompt 1: columns"):
        rollout.PromptSet.from_records([recs[0], {"messages": recs[1]["messages"]}], small_tok, 128)


def test_groups_come_from_the_engine_and_reuse_one_program(small_tok):
    model = tiny_model(len(small_tok))
    ps = rollout.PromptSet.from_records(synthetic.prompt_records(3, seed=1), small_tok, 128)
    engine = Engine.for_model(model)
    s = Sampling(temperature=1.0, seed=0)
    batch = rollout.sample_groups(model, small_tok, ps, group_size=4, max_new_tokens=8, sampling=s, seq_len=136)
    # Same ids as Model.generate on the same rows and seed: the rollout is the engine, unwrapped.
    rows = [p for p in ps.ids for _ in range(4)]
    assert batch.completion_ids == model.generate(rows, 8, sampling=s, stop_tokens=small_tok.eos_token_ids,
                                                  tokenizer=small_tok)
    assert len(batch.completions) == 12 and batch.tokens.shape == (12, 136)
    assert batch.prompts[0] is batch.prompts[3] and batch.columns["answer"][4] == ps.columns["answer"][1]
    programs = engine.compiled_programs()
    # New params (an update) and a new seed: no new compile.
    model.params = jax.tree.map(lambda x: x * 1.01, model.params)
    again = rollout.sample_groups(model, small_tok, ps, 4, 8, s.replace(seed=7), seq_len=136)
    assert engine.compiled_programs() == programs
    assert again.completion_ids != batch.completion_ids


def test_grpo_updates_raise_a_toy_reward(small_tok):
    """Reward: the share of completion tokens in the lower half of the vocabulary; updates raise its mean."""
    model = tiny_model(len(small_tok), seed=3)
    half = len(small_tok) // 2
    ps = rollout.PromptSet.from_records(synthetic.prompt_records(4, seed=2), small_tok, 128)

    def low_ids(prompts, completions, completion_ids, **kw):
        return [sum(t < half for t in c) / max(len(c), 1) for c in completion_ids]

    cfg = G.GRPOLossConfig(epsilon=0.2, beta=0.0)
    tx = optax.adam(1e-2)
    opt = tx.init(model.params)

    @jax.jit
    def update(params, opt, batch):
        (loss, stats), g = jax.value_and_grad(G.policy_loss, argnums=1, has_aux=True)(
            model.module, params, batch, cfg)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, loss

    means = []
    for step in range(8):
        b = rollout.sample_groups(model, small_tok, ps, 8, 6, Sampling(temperature=1.0, seed=step), seq_len=136)
        total, _ = rewards.combine([low_ids], b.prompts, b.completions, completion_ids=b.completion_ids)
        means.append(float(np.mean(total)))
        adv = G.group_advantages(total, 8)
        arrays = {"tokens": b.tokens, "segment_ids": b.segment_ids, "positions": b.positions,
                  "completion_mask": b.completion_mask, "advantages": adv}
        arrays = {k: jnp.asarray(v) for k, v in arrays.items()}
        arrays["old_logp"] = LP.token_logprobs(model.module, model.params, arrays["tokens"], arrays["segment_ids"],
                                               arrays["positions"])[0]
        model.params, opt, _ = update(model.params, opt, arrays)
    assert np.mean(means[-2:]) > np.mean(means[:2]) + 0.15, means


class _ScriptedEngine:
    """Stands in for the engine: returns fixed completions, so the test checks only the plumbing."""

    def __init__(self, completions):
        self.completions = completions

    def generate(self, rows, **kw):
        import types
        return types.SimpleNamespace(tokens=[list(c) for c in self.completions[:len(rows)]],
                                     finish_reasons=["stop"] * len(rows))


def test_hard_switch_prompts_are_scored_as_non_thinking(small_tok):
    """A prompt with ``enable_thinking: false`` has the empty think block pre-filled: a plain answer is
    the right format, and the reply holds no thinking tokens."""
    from qwen3_jax.post.grpo import completion_stats

    user = [{"role": "user", "content": "What is 2+2?"}]
    recs = [{"messages": user, "answer": "4", "enable_thinking": False}, {"messages": user, "answer": "4"}]
    ps = rollout.PromptSet.from_records(recs, small_tok, 128)
    assert ps.columns["enable_thinking"] == [False, True]
    assert small_tok.decode(ps.ids[0]).endswith("<think>\n\n</think>\n\n")
    plain, thought = "4<|im_end|>", "<think>\nadd\n</think>\n\n4<|im_end|>"
    ids = [small_tok.encode(t) for t in (plain, plain, thought, thought)]
    batch = rollout.sample_groups(None, small_tok, ps, 2, 16, Sampling(temperature=1.0), seq_len=144,
                                  engine=_ScriptedEngine(ids))
    assert batch.columns["enable_thinking"] == [False, False, True, True]
    total, per = rewards.combine([rewards.format_reward, rewards.accuracy_reward], batch.prompts,
                                 batch.completions, completion_ids=batch.completion_ids, **batch.columns)
    assert per["format_reward"] == [1.0] * 4 and total == [2.0] * 4
    # A think block after the pre-filled one is wrong.
    assert rewards.format_reward(batch.prompts[:1], [thought], enable_thinking=[False]) == [0.0]
    think_len = small_tok.encode(thought).index(small_tok.token_to_id("</think>"))
    assert rollout.thinking_lengths(batch.completion_ids, small_tok.token_to_id("</think>"),
                                    batch.columns["enable_thinking"]) == [0, 0, think_len, think_len]
    assert completion_stats(batch, small_tok)["thinking_length"] == think_len / 2
    with pytest.raises(rollout.PromptError, match="prompt 0: enable_thinking must be true or false, got 'no'"):
        rollout.PromptSet.from_records([{"messages": user, "enable_thinking": "no"}], small_tok, 128)



def _guard_is_enforced() -> bool:
    """Whether this backend refuses an implicit device-to-host copy under the transfer guard (JAX
    enforces it on GPU/TPU; CPU arrays are read in place, so the guard never fires there)."""
    x = jax.jit(lambda: jnp.arange(3.0))()
    try:
        with jax.transfer_guard_device_to_host("disallow"):
            np.asarray(x)
    except Exception:  # noqa: BLE001 - the guard's error type is backend specific
        return True
    return False


def test_rollout_after_an_update_reads_the_device_params(small_tok):
    """The policy's updated params reach the engine without a trip through the host: a rollout after an
    on-device update runs with implicit device-to-host transfers disallowed (only the generated ids are
    fetched, explicitly), the engine reads the very arrays the update returned, and it samples from
    the new weights. On CPU the guard is not enforced by JAX (see `_guard_is_enforced`), so there the
    test checks the sharing and the sampling; on an accelerator it checks the guard as well."""
    model = tiny_model(len(small_tok))
    ps = rollout.PromptSet.from_records(synthetic.prompt_records(2, seed=4), small_tok, 128)
    s = Sampling(temperature=1.0, seed=3)
    before = rollout.sample_groups(model, small_tok, ps, 2, 6, s, seq_len=134)
    model.params = jax.jit(lambda p: jax.tree.map(lambda x: x * 1.5, p))(model.params)  # an update, on device
    with jax.transfer_guard_device_to_host("disallow"):
        after = rollout.sample_groups(model, small_tok, ps, 2, 6, s, seq_len=134)
    engine = Engine.for_model(model)
    assert engine._params[0] is model.params  # prepared (on device, jitted) from the update's own arrays
    if _guard_is_enforced():
        with pytest.raises(Exception):  # noqa: B017 - the guard is live: a host copy of a weight would fail
            with jax.transfer_guard_device_to_host("disallow"):
                np.asarray(model.params["embed_tokens"]["embedding"])
    assert after.completion_ids != before.completion_ids
    assert after.completion_ids == model.generate([p for p in ps.ids for _ in range(2)], 6, sampling=s,
                                                  stop_tokens=small_tok.eos_token_ids, tokenizer=small_tok)
