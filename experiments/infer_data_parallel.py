"""Data-parallel inference: one model copy per group of devices, many prompts spread over the groups.

    .venv/bin/python experiments/infer_data_parallel.py [--groups 4] [--prompts 32]

In the spirit of a `pmap` script, but with one jitted program: the mesh is `data=G,tensor=8/G`,
so params are replicated over `data` (G copies, each split over its group's `tensor` devices) and
the batch is split over `data` (each group decodes its own rows). Prompts are processed in batches
of `--batch-per-group * G`; the script reports throughput and checks the tokens against one device.
"""

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import qwen3_jax  # noqa: E402
from qwen3_jax.generate import Engine, Sampling  # noqa: E402
from qwen3_jax.text.tokenizer import Tokenizer  # noqa: E402

TOPICS = ["the sea", "prime numbers", "JAX", "a cat", "autumn", "compilers", "tea", "the moon"]


def run_all(engine, prompts, batch, max_new, sampling, tok_size):
    out = []
    for i in range(0, len(prompts), batch):
        out += engine.generate(prompts[i:i + batch], max_new, sampling, stop_tokens=[], tokenizer_size=tok_size).tokens
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-dense")
    p.add_argument("--groups", type=int, default=4, help="model copies (the data axis); divides 8")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--batch-per-group", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=16)
    a = p.parse_args()
    n = jax.device_count()
    if n % a.groups:
        raise SystemExit(f"--groups {a.groups} does not divide the {n} devices")
    tok = Tokenizer.qwen3()
    mesh = qwen3_jax.make_mesh(f"data={a.groups},tensor={n // a.groups}")
    model = qwen3_jax.load(a.model, mesh=mesh)
    rng = np.random.default_rng(0)
    prompts = [tok.apply_chat_template([{"role": "user", "content": f"Tell me about {TOPICS[i % len(TOPICS)]} "
                                         f"in {int(rng.integers(2, 9))} words."}],
                                       add_generation_prompt=True, enable_thinking=False, tokenize=True)
               for i in range(a.prompts)]
    sampling = Sampling(temperature=0.7, top_p=0.8, top_k=20, seed=1)
    batch = a.batch_per_group * a.groups
    eng = Engine(model)
    run_all(eng, prompts[:batch], batch, a.max_new_tokens, sampling, len(tok))  # compile
    t0 = time.perf_counter()
    out = run_all(eng, prompts, batch, a.max_new_tokens, sampling, len(tok))
    dt = time.perf_counter() - t0
    print(f"{a.groups} model copies x {n // a.groups} devices each: {a.prompts} prompts, "
          f"{a.prompts * a.max_new_tokens / dt:.1f} tokens/s")
    emb = model.params["embed_tokens"]["embedding"]
    print(f"embedding spec {emb.sharding.spec}: replicated over data, split over tensor")
    single = Engine(qwen3_jax.load(a.model))
    ref = run_all(single, prompts, batch, a.max_new_tokens, sampling, len(tok))
    same = out == ref
    print("data-parallel tokens == single-device tokens:", same)
    for ids in out[:3]:
        print("-", repr(tok.decode(ids)[:60]))
    raise SystemExit(0 if same else 1)


if __name__ == "__main__":
    main()
