"""The compile worker: `python -m qwen3_jax.plan.worker` compiles plan requests in its own process.

The plan compiles in a separate process so that the TPU compiler (libtpu, loaded by
`get_topology_desc`) and its memory stay out of the caller, the caller's JAX setup (forced CPU
device counts, an initialised backend) does not matter, and a compile that runs out of time can be
killed. Requests arrive as one JSON list on stdin; each result is written to stdout as one line
`PLAN-RESULT <json>` as soon as it is done (an exception becomes {"error": ...} for that request).
"""

from __future__ import annotations

import json
import os
import sys
import traceback

RESULT_PREFIX = "PLAN-RESULT "


def load_config(model: str):
    """A preset name, a checkpoint directory, or a config.json path."""
    from qwen3_jax.config import Qwen3Config
    from qwen3_jax.presets import get_preset

    if os.path.isdir(model):
        return Qwen3Config.from_json_file(os.path.join(model, "config.json"))
    if os.path.isfile(model):
        return Qwen3Config.from_json_file(model)
    return get_preset(model)


def run(requests: list[dict], out=None) -> None:
    out = out or sys.stdout
    from qwen3_jax.plan.compile import plan_one
    from qwen3_jax.plan.topology import parse_slice

    devices = {}
    for req in requests:
        try:
            slice_ = parse_slice(req["topology"])
            if slice_.topology_name not in devices:
                devices[slice_.topology_name] = slice_.devices()
            res = plan_one(load_config(req["model"]), slice_, req["mesh"], req["task"], req["seq"], req["batch"],
                           remat=req.get("remat", "full"), microbatches=req.get("microbatches", 1),
                           new_tokens=req.get("new_tokens", 512), devices=devices[slice_.topology_name],
                           capacity_factor=req.get("capacity_factor"),
                           attention_impl=req.get("attention_impl", "auto"))
            for p in res["programs"]:
                p.pop("_hlo", None)
        except Exception as e:  # reported per request; the caller decides
            res = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:800],
                   "traceback": traceback.format_exc()[-4000:]}
        res["request"] = req
        out.write(RESULT_PREFIX + json.dumps(res) + "\n")
        out.flush()


def main() -> None:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # compile-only TPU devices; never look for a real TPU
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # compile-only: no TPU is used
    run(json.load(sys.stdin))


if __name__ == "__main__":
    main()
