"""Sharded inference: one model split over 8 CPU devices by the logical rules, one batch of prompts.

    .venv/bin/python experiments/infer_pjit.py [--mesh data=2,tensor=4] [--model tiny-dense]

Params and the KV cache are placed by `sharding/rules.py` (KV heads replicated when `tensor`
exceeds them); prefill and decode are `jax.jit` programs partitioned by XLA (pjit-style). The
script checks that the sharded run gives the tokens of an unsharded run of the same weights.
"""

import os

# 8 host devices; must be set before JAX is imported.
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402

import qwen3_jax  # noqa: E402
from qwen3_jax.generate import Engine, Sampling  # noqa: E402
from qwen3_jax.text.tokenizer import Tokenizer  # noqa: E402

PROMPTS = ["Why is the sky blue?", "Write a haiku about JAX.", "What is 17 * 23?", "Name three prime numbers."]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-dense", help="checkpoint directory or preset")
    p.add_argument("--mesh", default="data=2,tensor=4")
    p.add_argument("--max-new-tokens", type=int, default=24)
    a = p.parse_args()
    tok = Tokenizer.qwen3()
    mesh = qwen3_jax.make_mesh(a.mesh)
    print(f"{jax.device_count()} devices, mesh {dict(zip(mesh.axis_names, mesh.devices.shape))}")
    sharded = qwen3_jax.load(a.model, mesh=mesh)
    single = qwen3_jax.load(a.model)
    k = sharded.params["layers"]["self_attn"]["k_proj"]["kernel"]
    kv = sharded.config.num_key_value_heads
    note = " (tensor exceeds the KV heads: they are replicated)" if mesh.shape.get("tensor", 1) > kv else ""
    print(f"k_proj {k.shape} spec {k.sharding.spec}; {kv} KV heads{note}")
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                       enable_thinking=False, tokenize=True) for q in PROMPTS]
    sampling = Sampling(temperature=0.7, top_p=0.8, top_k=20, seed=0)
    outs = {}
    for name, model in (("sharded", sharded), ("single", single)):
        eng = Engine(model)
        eng.generate(prompts, a.max_new_tokens, sampling, stop_tokens=[], tokenizer_size=len(tok))  # compile
        t0 = time.perf_counter()
        res = eng.generate(prompts, a.max_new_tokens, sampling, stop_tokens=[], tokenizer_size=len(tok))
        dt = time.perf_counter() - t0
        outs[name] = res.tokens
        print(f"{name:8s}: {len(prompts) * a.max_new_tokens / dt:8.1f} tokens/s")
    for q, ids in zip(PROMPTS, outs["sharded"]):
        print(f"- {q!r} -> {tok.decode(ids)[:60]!r}")
    same = outs["sharded"] == outs["single"]
    print("sharded tokens == single-device tokens:", same)
    raise SystemExit(0 if same else 1)


if __name__ == "__main__":
    main()
