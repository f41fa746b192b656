"""Which attention computation the model runs (`attention_impl`), and the non-XLA ones.

* "xla": plain XLA attention over a [B, T, S] mask (`ops.attention`); the fastest on CPU.
* "flash": on TPU the project's Pallas kernels (`ops.flash_attention` for training and prefill,
  `ops.decode_attention` for decode), memory linear in the length, run per batch and head shard
  on a mesh (`ops.kernel_sharding`); on GPU
  `jax.nn.dot_product_attention` (cuDNN's fused attention when the dtype and shapes allow it, XLA
  otherwise) for training and prefill, and plain XLA attention for decode; on CPU the Pallas
  kernels in interpret mode (correct, slow: for tests).
* "ring": ring attention over the mesh's `sequence` axis (`ops.ring_attention`, wired in
  `model.attention`; each ring step uses the flash kernel on TPU) for calls without a cache;
  calls with a cache use "xla".
* "auto": ring when the mesh has `sequence` > 1 (unless the model uses Dual Chunk Attention,
  which ring attention does not implement), else flash on TPU and GPU, else xla.

With `dual_chunk_attention_config` the layers run `model.dual_chunk` whatever the choice (its
prefill is built on the flash kernel on TPU); an explicit "ring" is refused with an error.

The platform is that of the mesh's devices when there is a mesh (so a program compiled on this
CPU host for a TPU topology gets the TPU kernels), else `jax.default_backend()`.

With "flash" the layers receive the parts of the mask instead of the [B, T, S] mask itself: {"q_slots": [B, T], "kv_valid": [B, S] or None, "segment_ids": [B, T] or None}
(`mask_parts`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qwen3_jax.config import ConfigError
from qwen3_jax.ops.attention import causal_mask, dot_product_attention
from qwen3_jax.ops.kernel_sharding import shard_kernel

IMPLS = ("xla", "flash", "ring", "auto")
RING_DCA_ERROR = ("attention_impl='ring' does not support dual_chunk_attention_config (Dual Chunk Attention "
                  "runs its own chunked attention): use attention_impl='auto', 'flash' or 'xla'")
_HIDDEN = jnp.iinfo(jnp.int32).min  # segment id of padding keys: matches no query


def mesh_platform(mesh=None) -> str:
    """"tpu", "gpu" or "cpu": the platform of the mesh's devices, else the default backend."""
    if mesh is not None and getattr(mesh, "devices", None) is not None:
        return mesh.devices.flat[0].platform
    return jax.default_backend()


def resolve(impl: str, mesh=None, dual_chunk: bool = False) -> tuple[str, str]:
    """(concrete impl, platform) for `impl` on `mesh` (None: one device of the default backend).

    `dual_chunk`: the model uses Dual Chunk Attention, so "auto" never picks ring and "ring" is refused.
    """
    if impl not in IMPLS:
        raise ValueError(f"unknown attention_impl {impl!r}; expected one of {list(IMPLS)}")
    platform = mesh_platform(mesh)
    if mesh is None:
        mesh = jax.sharding.get_abstract_mesh()
    seq = dict(getattr(mesh, "shape", {}) or {}).get("sequence", 1)
    if impl == "auto":
        impl = "ring" if seq > 1 and not dual_chunk else ("flash" if platform in ("tpu", "gpu") else "xla")
    if impl == "ring" and dual_chunk:  # a ConfigError: the CLIs print it as one line and exit 2
        raise ConfigError(RING_DCA_ERROR)
    if impl == "ring":
        try:
            from qwen3_jax.ops import ring_attention  # noqa: F401
        except ImportError as e:  # pragma: no cover - present since issue 11's ring attention landed
            raise NotImplementedError("attention_impl='ring' needs qwen3_jax.ops.ring_attention") from e
    return impl, platform


def mask_parts(q_slots, kv_valid, segment_ids) -> dict:
    """The layers' mask argument for "flash" (see the module docstring)."""
    return {"q_slots": q_slots, "kv_valid": kv_valid, "segment_ids": segment_ids}


def _segments(parts: dict, T: int):
    """(query ids, key ids) carrying packing and padding, or (None, None) when neither exists."""
    seg, valid = parts["segment_ids"], parts["kv_valid"]
    if seg is None and valid is None:
        return None, None
    B = parts["q_slots"].shape[0]
    q_seg = jnp.zeros((B, T), jnp.int32) if seg is None else seg.astype(jnp.int32)
    S = T if valid is None else valid.shape[1]
    kv_seg = jnp.zeros((B, S), jnp.int32) if seg is None else seg.astype(jnp.int32)
    if valid is not None:
        kv_seg = jnp.where(valid, kv_seg, _HIDDEN)
    return q_seg, kv_seg


def _full_mask(parts: dict, S: int):
    B = parts["q_slots"].shape[0]
    valid = parts["kv_valid"]
    valid = jnp.ones((B, S), bool) if valid is None else valid
    return causal_mask(parts["q_slots"], valid, parts["segment_ids"])


def _flash(q, k, v, q_seg, kv_seg, q_pos, scale: float, interpret: bool):
    """Causal `flash_attention` per batch and head shard of the context mesh (`ops.kernel_sharding`)."""
    from qwen3_jax.ops.flash_attention import flash_attention

    def run(q, k, v, q_seg, kv_seg, q_pos):
        return flash_attention(q, k, v, segment_ids=q_seg, kv_segment_ids=kv_seg, q_positions=q_pos, causal=True,
                               scale=scale, interpret=interpret)

    return shard_kernel(run, (q, k, v, q_seg, kv_seg, q_pos), ("B.K.", "B.K.", "B.K.", "B.", "B.", "B."), "B.K.",
                        kv_heads=k.shape[2])


def _decode(q, k_cache, v_cache, seen, k, v, k_valid, scale: float, interpret: bool):
    """`decode_attention` (cache in the model's layout, plus the step's own k, v) per batch and head shard."""
    from qwen3_jax.ops.decode_attention import decode_attention

    def run(q, k_cache, v_cache, seen, k, v, k_valid):
        return decode_attention(q, k_cache, v_cache, seen, scale=scale, extra_kv=(k, v, k_valid), interpret=interpret)

    return shard_kernel(run, (q, k_cache, v_cache, seen, k, v, k_valid),
                        ("B.K.", "BK..", "BK..", "B.", "B.K.", "B.K.", "B"), "B.K.", kv_heads=k.shape[2])


def attend(platform: str, q, k, v, parts: dict, cache, write_at, scale: float, update_cache):
    """Attention of one layer with "flash": q [B, T, N, H], k/v [B, T, K, H] (rotated).

    On a mesh the kernels run inside a `shard_map` over the batch axes and `tensor` on the heads
    (`ops.kernel_sharding`): Mosaic kernels cannot be partitioned by XLA.

    Returns (out [B, T, N, H], updated cache or None); `update_cache` is the model's cache writer.
    """
    B, T = q.shape[:2]
    interpret = platform != "tpu"
    if cache is None:
        if platform == "gpu":
            mask = _full_mask(parts, T)[:, None]
            return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale), None
        q_seg, kv_seg = _segments(parts, T)
        return _flash(q, k, v, q_seg, kv_seg, None, scale, interpret), None

    S = cache["k"].shape[-2]
    valid = parts["kv_valid"]
    if T == 1:
        seen = (jnp.arange(S)[None, :] <= parts["q_slots"][:, :1]) & valid  # [B, S]
        slot = jnp.arange(S)[None, :] == write_at[:, None]
        if platform == "gpu":
            out = dot_product_attention(q, cache["k"], cache["v"], (seen & ~slot)[:, None], scale, "cache",
                                        (k, v, jnp.any(seen & slot, axis=-1)[:, None, None]))
        else:
            # As the XLA path: the step's own key and value join from outside the cache, which is
            # written after the read (the dependency below orders the write after it).
            dt = cache["k"].dtype
            out = _decode(q.astype(dt), cache["k"], cache["v"], seen & ~slot, k.astype(dt), v.astype(dt),
                          jnp.any(seen & slot, axis=-1), scale, interpret).astype(q.dtype)
        dep = (out[:, :, :1, :1] * 0).astype(k.dtype)
        return out, update_cache(cache, k + dep, v + dep, write_at)
    if T == S:  # the call fills the whole cache from slot 0: attend over k, v as computed
        parts = dict(parts, q_slots=jnp.broadcast_to(jnp.arange(T), (B, T)))
        if platform == "gpu":
            out = jax.nn.dot_product_attention(q, k, v, mask=_full_mask(parts, S)[:, None], scale=scale)
        else:
            q_seg, kv_seg = _segments(parts, T)
            out = _flash(q, k, v, q_seg, kv_seg, None, scale, interpret)
        return out, update_cache(cache, k, v, write_at)
    # A chunk of queries against the cache: write, then attend over the whole cache by slot.
    cache = update_cache(cache, k, v, write_at)
    kc = cache["k"].transpose(0, 2, 1, 3).astype(q.dtype)  # [B, S, K, H]
    vc = cache["v"].transpose(0, 3, 1, 2).astype(q.dtype)
    if platform == "gpu":
        return jax.nn.dot_product_attention(q, kc, vc, mask=_full_mask(parts, S)[:, None], scale=scale), cache
    q_seg, kv_seg = _segments(dict(parts, segment_ids=None), T)
    return _flash(q, kc, vc, q_seg, kv_seg, parts["q_slots"], scale, interpret), cache
