"""Pictures of a run, as PNG files that `dvc plots show` and `dvc plots diff` display offline.

Rendered with matplotlib's Agg backend (no display needed); the same numbers give the same bytes.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from pipeline.core import files  # noqa: E402

PNG_METADATA = {"Software": None}  # no version string in the file: bytes depend on the numbers only


def _save(figure, output: Path) -> None:
    with files.replacing(output) as (tmp,):
        figure.savefig(tmp, format="png", dpi=100, metadata=PNG_METADATA)
    plt.close(figure)


def loss_curve(train: list[tuple[float, float]], val: list[tuple[float, float]], output: Path) -> None:
    """Train and validation loss (nats per token) against tokens seen, from (tokens, loss) points."""
    figure, axes = plt.subplots(figsize=(7, 4.2))
    if train:
        axes.plot(*zip(*train), label="train", linewidth=1.2)
    if val:
        axes.plot(*zip(*val), label="validation", marker="o", markersize=3, linewidth=1.2)
    axes.set_xlabel("tokens seen")
    axes.set_ylabel("loss (nats per token)")
    axes.set_title("Training loss")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    _save(figure, output)


def bits_per_byte(results: dict[str, dict[str, float]], output: Path) -> None:
    """Grouped bars: bits per byte of each group (and `all`), one bar per split, from
    {split: {group: bpb}}."""
    splits = list(results)
    groups = list(dict.fromkeys(group for split in splits for group in results[split]))
    width = 0.8 / max(len(splits), 1)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) + 2), 4.2))
    for i, split in enumerate(splits):
        positions = [g + (i - (len(splits) - 1) / 2) * width for g in range(len(groups))]
        values = [results[split].get(group, float("nan")) for group in groups]
        bars = axes.bar(positions, values, width, label=split)
        axes.bar_label(bars, fmt="%.3f", fontsize=7)
    axes.set_xticks(range(len(groups)), groups, rotation=20, ha="right", fontsize=8)
    axes.set_ylabel("bits per byte (lower is better)")
    axes.set_title("Evaluation: bits per byte by group and split")
    axes.legend()
    figure.tight_layout()
    _save(figure, output)
