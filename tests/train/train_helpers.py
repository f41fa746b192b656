"""Small configs and packed batches for the trainer tests (no data pipeline needed)."""

import numpy as np

from qwen3_jax.train.config import config_from_dict

TINY_MODEL = dict(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, max_position_embeddings=512, tie_word_embeddings=False,
                  name="test-tiny")
TINY_MOE = dict(TINY_MODEL, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, name="test-moe")


def tiny_config(model_fields=None, **sections):
    """A TrainConfig on a tiny model; `sections` are merged into the defaults, e.g. train={"steps": 5}."""
    d = {"model": {"config": dict(model_fields or TINY_MODEL)},
         "train": {"steps": 20, "batch_size": 4, "seq_len": 32, "loss_chunk": 8},
         "optimizer": {"lr": 3e-3, "warmup_steps": 2, "weight_decay": 0.01},
         "mesh": "data=1"}
    for k, v in sections.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    return config_from_dict(d)


def packed_batch(batch, seq, vocab, seed=0, pad_tail=3):
    """Rows of 2-3 documents of random tokens with segment ids 1, 2, ... and positions restarting per
    document; the last `pad_tail` slots of each row are padding (segment 0)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, vocab, size=(batch, seq)).astype(np.int32)
    seg = np.zeros((batch, seq), np.int32)
    pos = np.zeros((batch, seq), np.int32)
    for b in range(batch):
        real = seq - pad_tail
        cuts = sorted(rng.choice(np.arange(4, real - 4), size=rng.integers(1, 3), replace=False).tolist())
        start = 0
        for i, end in enumerate(cuts + [real]):
            seg[b, start:end] = i + 1
            pos[b, start:end] = np.arange(end - start)
            start = end
        tokens[b, real:] = 0
    return {"tokens": tokens, "segment_ids": seg, "positions": pos}


class BatchStream:
    """A resumable stream of packed batches (batch k is `packed_batch(seed=k)`), like the data iterator."""

    def __init__(self, batch, seq, vocab):
        self.shape, self.k = (batch, seq, vocab), 0

    def __iter__(self):
        return self

    def __next__(self):
        b = packed_batch(*self.shape, seed=self.k)
        self.k += 1
        return b

    def get_state(self) -> bytes:
        return str(self.k).encode()

    def set_state(self, state) -> None:
        self.k = int(state.decode() if isinstance(state, bytes) else state)

    def start_prefetch(self):
        pass
