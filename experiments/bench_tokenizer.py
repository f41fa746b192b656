"""Benchmark: encode throughput of our Qwen3 tokenizer against tiktoken on the same ranks.

Both sides encode the same ~10 MB text (stdlib sources and docs plus generated
multilingual text, NFC-normalised) in one process, in the same run, so the
shared machine's noise affects both alike; what we report is the ratio.

* single: one ``encode`` call on the whole text, one thread each.
* batch: the text cut into ~10 KB documents, encoded with two threads
  (``tokenizers``' ``encode_batch_fast`` on a 2-thread Rayon pool; tiktoken's
  ``encode_ordinary_batch(num_threads=2)``).

Writes experiments/results/bench_tokenizer.{json,png}. Run:
    python experiments/bench_tokenizer.py [--plot-only]
"""

import os

os.environ.setdefault("RAYON_NUM_THREADS", "2")  # before tokenizers starts its pool
os.environ["TOKENIZERS_PARALLELISM"] = "true"

import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import sysconfig  # noqa: E402
import time  # noqa: E402
import unicodedata  # noqa: E402
from pathlib import Path  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import tiktoken  # noqa: E402
import tokenizers  # noqa: E402

from qwen3_jax.text import build  # noqa: E402
from qwen3_jax.text.tokenizer import Tokenizer  # noqa: E402

TARGET_BYTES = 10 * 1024 * 1024
RESULTS = Path(__file__).resolve().parent / "results"


def make_corpus(target: int) -> str:
    """About `target` bytes: 70% stdlib sources/docs, 30% generated multilingual text."""
    parts, size = [], 0
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if size >= 0.7 * target:
            break
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text.encode("utf-8"))
    rng = random.Random(0)
    blocks = [(0x4E00, 0x9FFF), (0x3041, 0x30FA), (0xAC00, 0xD7A3), (0x0410, 0x044F),
              (0x0621, 0x064A), (0x1F300, 0x1FAFF), (0x0041, 0x007A)]
    while size < target:
        lo, hi = rng.choice(blocks)
        word = "".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 6)))
        piece = word + rng.choice([" ", "，", "。", "\n", "  ", " 42 ", "\n\n"])
        parts.append(piece)
        size += len(piece.encode("utf-8"))
    return unicodedata.normalize("NFC", "".join(parts))


def best_time(fn, repeats: int = 3) -> float:
    """Minimum wall time over repeats (the least disturbed run on a shared machine)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def plot(result: dict) -> None:
    """Bar plot of MB/s, ours vs tiktoken, single thread and 2-thread batch."""
    mbps, n_bytes = result["MB_per_s"], result["bytes"]
    fig, ax = plt.subplots(figsize=(6, 4.4))
    labels = ["single thread", "batch, 2 threads"]
    xs = range(len(labels))
    ours = [mbps["ours_single"], mbps["ours_batch2"]]
    theirs = [mbps["tiktoken_single"], mbps["tiktoken_batch2"]]
    ax.bar([x - 0.2 for x in xs], ours, 0.4, label="qwen3_jax (tokenizers)")
    ax.bar([x + 0.2 for x in xs], theirs, 0.4, label="tiktoken")
    for x, a, b in zip(xs, ours, theirs):
        ax.text(x, max(a, b) * 1.02, f"ours/tiktoken = {a / b:.2f}", ha="center")
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("MB/s (UTF-8 input)")
    ax.set_title(f"Qwen3 encode, {n_bytes / 1e6:.1f} MB, same ranks, same run")
    ax.set_ylim(0, max(ours + theirs) * 1.15)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(RESULTS / "bench_tokenizer.png", dpi=120)


def main() -> None:
    if "--plot-only" in sys.argv:  # redraw from the saved JSON without re-measuring
        plot(json.loads((RESULTS / "bench_tokenizer.json").read_text()))
        return
    text = make_corpus(TARGET_BYTES)
    n_bytes = len(text.encode("utf-8"))
    docs, chunk = [], 10_000
    start = 0
    while start < len(text):  # cut at newlines so documents are natural
        end = text.find("\n", start + chunk)
        end = len(text) if end < 0 else end + 1
        docs.append(text[start:end])
        start = end

    tok = Tokenizer.qwen3()
    enc = tiktoken.Encoding("qwen3", pat_str=build.QWEN_PATTERN, mergeable_ranks=build.load_ranks(),
                            special_tokens={c: build.NUM_BPE_TOKENS + i
                                            for i, (c, _) in enumerate(build.ADDED_TOKENS)})
    ours_ids = tok.encode(text)
    assert ours_ids == enc.encode_ordinary(text), "tokenizers and tiktoken disagree"
    assert tok.encode_batch(docs) == enc.encode_ordinary_batch(docs, num_threads=2)

    t = {
        "ours_single": best_time(lambda: tok.encode(text)),
        "tiktoken_single": best_time(lambda: enc.encode_ordinary(text)),
        "ours_batch2": best_time(lambda: tok.encode_batch(docs)),
        "tiktoken_batch2": best_time(lambda: enc.encode_ordinary_batch(docs, num_threads=2)),
    }
    mbps = {k: n_bytes / v / 1e6 for k, v in t.items()}
    result = {
        "bytes": n_bytes,
        "tokens": len(ours_ids),
        "documents_in_batch": len(docs),
        "seconds": t,
        "MB_per_s": mbps,
        "ratio_single_ours_over_tiktoken": mbps["ours_single"] / mbps["tiktoken_single"],
        "ratio_batch2_ours_over_tiktoken": mbps["ours_batch2"] / mbps["tiktoken_batch2"],
        "versions": {"tokenizers": tokenizers.__version__, "tiktoken": tiktoken.__version__,
                     "python": platform.python_version()},
        "cpus": os.cpu_count(),
        "note": "best of 3; shared 2-core machine; ratio > 1 means we are faster",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_tokenizer.json").write_text(json.dumps(result, indent=2) + "\n")

    plot(result)

    print(f"single thread: ours {mbps['ours_single']:.2f} MB/s, tiktoken {mbps['tiktoken_single']:.2f} MB/s,"
          f" ratio {result['ratio_single_ours_over_tiktoken']:.2f}")
    print(f"batch 2 threads: ours {mbps['ours_batch2']:.2f} MB/s, tiktoken {mbps['tiktoken_batch2']:.2f} MB/s,"
          f" ratio {result['ratio_batch2_ours_over_tiktoken']:.2f}")


if __name__ == "__main__":
    main()
