"""The report's figures from run.py's metrics.json."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STAGES = ("pretrain", "cold_start_sft", "grpo", "fusion_sft", "general_rl", "final")


def training_curves(metrics: dict, path: Path) -> None:
    names = [s for s in STAGES if metrics["stages"].get(s, {}).get("history")]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2))
    axes = [axes] if len(names) == 1 else axes
    for ax, name in zip(axes, names):
        h = metrics["stages"][name]["history"]
        x = [m["step"] for m in h]
        if "reward" in h[0]:
            ax.plot(x, [m["reward"] for m in h], label="total reward")
            for k in h[0]:
                if k.startswith("reward_"):
                    ax.plot(x, [m[k] for m in h], label=k[7:])
            ax.set_ylabel("mean reward")
            ax.legend(fontsize=7)
        else:
            ax.plot(x, [m["loss"] for m in h])
            ax.set_yscale("log")
            ax.set_ylabel("loss")
        ax.set_title(f"{name} ({metrics['stages'][name]['seconds'] / 60:.1f} min)")
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def stage_accuracy(metrics: dict, path: Path) -> None:
    names = [s for s in STAGES if "eval" in metrics["stages"].get(s, {})]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
    x = range(len(names))
    for mode, off in (("think", -0.2), ("no_think", 0.2)):
        ax1.bar([i + off for i in x], [metrics["stages"][n]["eval"][mode]["accuracy"] for n in names], 0.4,
                label=f"/{mode}")
    ax1.set_xticks(list(x), names, rotation=20, fontsize=8)
    ax1.set_ylabel("held-out accuracy")
    ax1.set_ylim(0, 1)
    ax1.legend()
    for key in ("think_single", "think_multi", "no_think_single", "no_think_multi"):
        ax2.plot(list(x), [metrics["stages"][n]["eval"]["think_follow"][key] for n in names], "o-", label=key)
    ax2.set_xticks(list(x), names, rotation=20, fontsize=8)
    ax2.set_ylabel("ThinkFollow (flag obeyed)")
    ax2.set_ylim(0, 1.05)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def budget_curve(metrics: dict, path: Path) -> None:
    curve = metrics["stages"]["final"]["eval"].get("budget")
    if not curve:
        return
    finite = [c for c in curve if c["budget"] is not None]
    unlimited = [c for c in curve if c["budget"] is None]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot([c["budget"] for c in finite], [c["accuracy"] for c in finite], "o-", label="thinking budget")
    if unlimited:
        ax.axhline(unlimited[0]["accuracy"], color="g", ls="--", label="no budget")
    ax.axhline(metrics["stages"]["final"]["eval"]["no_think"]["accuracy"], color="r", ls=":", label="/no_think")
    ax.set_xlabel("thinking budget (tokens)")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend()
    ax.set_title("accuracy vs thinking budget")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(metrics: dict, out: Path) -> None:
    training_curves(metrics, out / "training.png")
    stage_accuracy(metrics, out / "stages.png")
    budget_curve(metrics, out / "budget.png")
    (out / "tables.md").write_text(tables(metrics))


def tables(metrics: dict) -> str:
    """The report's tables (markdown): per stage time, accuracy, ThinkFollow, thinking length; the
    final model per operation and digit count; accuracy against the thinking budget."""
    rows = ["| stage | time (min) | /think acc | /no_think acc | ThinkFollow think 1-turn / multi | "
            "no_think 1-turn / multi | mean thinking tokens |", "|---|---|---|---|---|---|---|"]
    for name in STAGES:
        st = metrics["stages"].get(name)
        if st is None:
            continue
        ev = st.get("eval")
        if ev is None:
            rows.append(f"| {name} | {st['seconds'] / 60:.1f} | | | | | |")
            continue
        f = ev["think_follow"]
        rows.append(f"| {name} | {st['seconds'] / 60:.1f} | {ev['think']['accuracy']:.2f} | "
                    f"{ev['no_think']['accuracy']:.2f} | {f['think_single']:.2f} / {f['think_multi']:.2f} | "
                    f"{f['no_think_single']:.2f} / {f['no_think_multi']:.2f} | {ev['think']['mean_think_tokens']:.0f} |")
    out = ["\n".join(rows)]
    final = metrics["stages"].get("final", {}).get("eval")
    if final:
        keys = sorted(set(final["think"]["by_bucket"]) | set(final["no_think"]["by_bucket"]))
        t = ["| operation, digits | /think | /no_think |", "|---|---|---|"]
        for k in ("add", "sub", "mul"):
            t.append(f"| **{k} (all)** | {final['think']['by_op'].get(k, float('nan')):.2f} | "
                     f"{final['no_think']['by_op'].get(k, float('nan')):.2f} |")
        for k in keys:
            t.append(f"| {k} | {final['think']['by_bucket'].get(k, float('nan')):.2f} | "
                     f"{final['no_think']['by_bucket'].get(k, float('nan')):.2f} |")
        out.append("\n".join(t))
        if final.get("budget"):
            b = ["| thinking budget | accuracy | integer answers | mean thinking tokens |", "|---|---|---|---|"]
            for c in final["budget"]:
                b.append(f"| {c['budget'] if c['budget'] is not None else 'none'} | {c['accuracy']:.2f} | "
                         f"{c['integer_answers']:.2f} | {c['mean_think_tokens']:.0f} |")
            out.append("\n".join(b))
    return "\n\n".join(out) + "\n"
