"""SFT samples: the loss mask covers exactly the assistant tokens of the rendered conversation."""

import json

import numpy as np
import pytest

from qwen3_jax.post import fusion, sft_data, sft_pipeline, synthetic
from qwen3_jax.text import chat


def runs(sample, tok):
    """Decoded text of each contiguous run of masked tokens, and of the unmasked remainder."""
    out, cur = [], []
    for i, m in zip(sample.ids.tolist(), sample.loss_mask.tolist()):
        if m:
            cur.append(i)
        elif cur:
            out.append(tok.decode(cur))
            cur = []
    if cur:
        out.append(tok.decode(cur))
    rest = tok.decode([i for i, m in zip(sample.ids.tolist(), sample.loss_mask.tolist()) if not m])
    return out, rest


TOOLS = [synthetic.CALCULATOR]

CASES = {
    "thinking": (
        [{"role": "user", "content": "What is 2+3? /think"},
         {"role": "assistant", "content": "It is 5.", "reasoning_content": "2 plus 3 is 5."}], None,
        "<|im_start|>user\nWhat is 2+3? /think<|im_end|>\n<|im_start|>assistant\n"
        "<think>\n2 plus 3 is 5.\n</think>\n\nIt is 5.<|im_end|>\n",
        ["<think>\n2 plus 3 is 5.\n</think>\n\nIt is 5.<|im_end|>"]),
    "non_thinking": (
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+3? /no_think"},
         {"role": "assistant", "content": "5"}], None,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+3? /no_think<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n5<|im_end|>\n",
        ["<think>\n\n</think>\n\n5<|im_end|>"]),
    "tool_call": (
        [{"role": "user", "content": "Compute 6*7."},
         {"role": "assistant", "content": "", "reasoning_content": "Use the tool.",
          "tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
         {"role": "tool", "content": "42"},
         {"role": "assistant", "content": "It is 42."}], TOOLS,
        None,
        ['<think>\nUse the tool.\n</think>\n\n<tool_call>\n{"name": "calculator", "arguments": '
         '{"expression": "6*7"}}\n</tool_call><|im_end|>',
         "<think>\n\n</think>\n\nIt is 42.<|im_end|>"]),
    "multi_turn": (
        [{"role": "user", "content": "Hi /no_think"}, {"role": "assistant", "content": "Hello!"},
         {"role": "user", "content": "What is 1+1? /think"},
         {"role": "assistant", "content": "2", "reasoning_content": "One and one."}], None,
        "<|im_start|>user\nHi /no_think<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nWhat is 1+1? /think<|im_end|>\n<|im_start|>assistant\n"
        "<think>\nOne and one.\n</think>\n\n2<|im_end|>\n",
        ["Hello!<|im_end|>", "<think>\nOne and one.\n</think>\n\n2<|im_end|>"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_mask_covers_exactly_assistant_tokens(tok, case):
    messages, tools, expected_text, assistant = CASES[case]
    sample = sft_data.tokenize_chat(messages, tok, tools=tools, train_on="all")
    # The rendered string is the chat template's own output.
    assert sample.text == chat.render_jinja(chat.QWEN3_CHAT_TEMPLATE, messages, tools=tools,
                                            add_generation_prompt=False)
    if expected_text is not None:
        assert sample.text == expected_text
    assert tok.decode(sample.ids.tolist()) == sample.text
    masked, rest = runs(sample, tok)
    assert masked == assistant
    # Everything else is context: removing the assistant pieces from the text leaves the rest.
    text = sample.text
    for piece in assistant:
        text = text.replace(piece, "", 1)
    assert rest == text
    assert sample.ids.dtype == np.int32 and sample.loss_mask.shape == sample.ids.shape


def test_train_on_last_is_the_default(tok):
    """History turns render with no think block, so by default only the last assistant turn is trained."""
    messages, _, text, assistant = CASES["multi_turn"]
    default = sft_data.tokenize_chat(messages, tok)
    masked, rest = runs(default, tok)
    assert masked == assistant[-1:] and "Hello!<|im_end|>" in rest
    assert (default.ids == sft_data.tokenize_chat(messages, tok, train_on="last").ids).all()
    assert runs(sft_data.tokenize_chat(messages, tok, train_on="all"), tok)[0] == assistant
    from qwen3_jax.post.sft import SFTData
    assert SFTData.from_dict({"paths": ["x.jsonl"]}).train_on == "last"
    assert SFTData.from_dict({"paths": ["x.jsonl"], "train_on": "all"}).train_on == "all"


def test_bad_conversations(tok, tmp_path):
    with pytest.raises(sft_data.SFTDataError, match="no assistant turn"):
        sft_data.tokenize_chat([{"role": "user", "content": "hi"}], tok)
    with pytest.raises(sft_data.SFTDataError, match="chat control tokens"):
        sft_data.tokenize_chat([{"role": "user", "content": "x<|im_end|>"},
                                {"role": "assistant", "content": "y"}], tok)
    path = tmp_path / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    for line, message in [
        ("{not json", r"bad.jsonl:2: not valid JSON"),
        (json.dumps({"text": "hello"}), r"bad.jsonl:2: not a conversation \(an object without 'messages'"),
        (json.dumps(42), r"bad.jsonl:2: not a conversation \(expected an object"),
        (json.dumps({"messages": [{"role": "robot", "content": "a"}]}), r"bad.jsonl:2: message 0 has unknown role"),
        (json.dumps({"messages": [{"role": "user", "content": "a"}]}), r"bad.jsonl:2: .*no assistant turn"),
    ]:
        path.write_text(json.dumps(good) + "\n" + line + "\n")
        with pytest.raises(sft_data.SFTDataError, match=message):
            sft_data.load_samples([path], tok)


def test_set_mode_and_multi_turn():
    convo = [{"role": "user", "content": "Q"},
             {"role": "assistant", "content": "<think>\nwhy\n</think>\n\nA"}]
    no = fusion.set_mode(convo, think=False)
    assert no[0]["content"] == "Q /no_think" and no[1] == {"role": "assistant", "content": "A", "reasoning_content": ""}
    assert convo[0]["content"] == "Q"  # input untouched
    yes = fusion.set_mode(convo, think=True, flag="system")
    assert yes[0] == {"role": "system", "content": "/think"} and yes[2]["reasoning_content"] == "why"
    assert fusion.set_mode(convo, think=True, flag=None)[0]["content"] == "Q"
    with pytest.raises(sft_data.SFTDataError, match="needs a /no_think flag"):
        fusion.set_mode(convo, think=False, flag=None)
    with pytest.raises(sft_data.SFTDataError, match="needs reasoning"):
        fusion.set_mode([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}], think=True)
    # Flag changes between turns; an unflagged turn inherits /no_think.
    turns = [[{"role": "user", "content": f"Q{i}"},
              {"role": "assistant", "content": f"A{i}", "reasoning_content": f"R{i}"}] for i in range(3)]
    mt = fusion.multi_turn(turns, [True, False, None])
    assert [m["content"] for m in mt if m["role"] == "user"] == ["Q0 /think", "Q1 /no_think", "Q2"]
    assert chat.thinking_mode(mt) is False
    text = chat.render(mt, add_generation_prompt=False)
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nA2<|im_end|>\n")
    assert "R0" not in text and "R2" not in text  # history drops reasoning; the last turn is non-thinking


def test_fuse_mix_follows_the_last_flag(tok):
    records = synthetic.sft_records(120, seed=3, mode="fusion", tool_share=0.0)
    kinds = {"flagless": 0, "system": 0, "multi": 0, "think": 0, "no_think": 0}
    for r in records:
        msgs = r["messages"]
        think = chat.thinking_mode(msgs)
        final = chat.render(msgs, add_generation_prompt=False).rsplit("<|im_start|>assistant\n", 1)[1]
        # The final turn shows reasoning exactly when the last flag asks for thinking.
        assert final.startswith("<think>\n\n</think>") != think
        kinds["think" if think else "no_think"] += 1
        kinds["multi"] += sum(m["role"] == "user" for m in msgs) > 1
        kinds["system"] += msgs[0]["role"] == "system"
        kinds["flagless"] += "/think" not in json.dumps(msgs) and "/no_think" not in json.dumps(msgs)
    assert all(v > 0 for v in kinds.values()), kinds


def test_packed_batches(tok):
    samples = [sft_data.tokenize_chat(r["messages"], tok, tools=r.get("tools"))
               for r in synthetic.sft_records(40, seed=0)]
    longest = max(len(s) for s in samples)
    kept, stats = sft_pipeline.prepare(samples, seq_len=longest - 1)
    assert stats.dropped_overlong >= 1 and stats.kept == len(kept) == stats.samples - stats.dropped_overlong
    with pytest.raises(sft_data.SFTDataError, match=r"has \d+ tokens, more than seq_len"):
        sft_pipeline.prepare(samples, seq_len=longest - 1, overlong="error")
    seq = 128
    kept, _ = sft_pipeline.prepare(samples, seq_len=seq)
    ds = sft_pipeline.packed_batches(kept, seq_len=seq, batch_size=2, seed=0)
    it = iter(ds)
    first = [next(it) for _ in range(3)]
    by_ids = {tuple(s.ids.tolist()): s for s in kept}
    for batch in first:
        assert set(batch) == set(sft_pipeline.BATCH_KEYS)
        assert all(v.shape == (2, seq) and v.dtype == np.int32 for v in batch.values())
        for row in range(2):
            seg, toks, lm = batch["segment_ids"][row], batch["tokens"][row], batch["loss_mask"][row]
            for s_id in set(seg.tolist()) - {0}:
                where = np.flatnonzero(seg == s_id)
                sample = by_ids[tuple(toks[where].tolist())]  # a whole conversation, unsplit
                assert (batch["positions"][row][where] == np.arange(len(where))).all()
                # loss at t predicts token t + 1: the sample's mask shifted by one, nothing across samples
                assert (lm[where[:-1]] == sample.loss_mask[1:]).all() and lm[where[-1]] == 0
            assert (lm[seg == 0] == 0).all()
    # Exact resume from the iterator state.
    it2 = iter(sft_pipeline.packed_batches(kept, seq_len=seq, batch_size=2, seed=0))
    next(it2)
    state = it2.get_state()
    it3 = iter(sft_pipeline.packed_batches(kept, seq_len=seq, batch_size=2, seed=0))
    it3.set_state(state)
    for a, b in zip([next(it3), next(it3)], first[1:]):
        assert all((a[k] == b[k]).all() for k in a)


def test_synthetic_records_are_trainable(tok, tmp_path):
    for mode in ("think", "no_think", "fusion"):
        recs = synthetic.sft_records(30, seed=1, mode=mode, tool_share=0.2)
        path = synthetic.write_jsonl(tmp_path / f"{mode}.jsonl", recs)
        samples = sft_data.load_samples([path], tok)
        assert len(samples) == len(recs) and all(s.loss_mask.any() for s in samples)
    prompts = synthetic.prompt_records(10, seed=0)
    assert all(str(int(p["answer"])) == p["answer"] for p in prompts)
    assert {chat.thinking_mode(p["messages"]) for p in prompts} == {True, False}
