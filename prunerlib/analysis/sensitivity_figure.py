"""The sensitivity section's figures: accuracy against the share of one layer removed (a line per
criterion, a band over seeds, random dashed grey), and the criteria's agreement as heat maps."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a sweep head node
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from prunerlib.analysis.sensitivity import HEAT_FRACTION, curve, mean_jaccard  # noqa: E402

# Colour per criterion, the same in every panel; random is the control: grey and dashed.
COLOURS = {"l1": "tab:blue", "mean_activation": "tab:orange", "apoz": "tab:green", "magnitude": "tab:purple",
           "random": "0.45"}


def curve_figure(rows: pd.DataFrame, panel: str, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained", dpi=150, sharey=True)
    for ax, metric, title in zip(axes, ("acc_val", "acc_test"), ("validation accuracy", "test accuracy")):
        pretrained = rows.drop_duplicates(["scan", "seed"])[f"{metric}_pretrained"].mean()
        ax.axhline(pretrained, color="0.2", linestyle=":", linewidth=1, label="unpruned (pretrained)")
        for criterion, points in curve(rows, metric).groupby("criterion"):
            control = criterion == "random"
            colour = COLOURS.get(criterion, "tab:brown")
            ax.plot(points["fraction"], points["mean"], color=colour, linestyle="--" if control else "-",
                    marker="o", markersize=3, label=f"{criterion}{' (control)' if control else ''}")
            if points["low"].notna().any():
                ax.fill_between(points["fraction"], points["low"], points["high"], color=colour,
                                alpha=0.12 if control else 0.18, linewidth=0)
        ax.set_xlabel(f"share of {rows['layer'].iloc[0]}'s {rows['what'].iloc[0]} removed")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy, no fine-tuning")
    seeds = rows.groupby("scan")["seed"].nunique().min()
    axes[1].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"{panel} ({seeds} seed{'s' if seeds != 1 else ''})", fontsize=10)
    fig.savefig(path)
    plt.close(fig)
    return path


def heat_figure(agreement: pd.DataFrame, path: Path) -> Path:
    panels = [p for p in dict.fromkeys(agreement["panel"])
              if np.isclose(agreement[agreement["panel"] == p]["fraction"], HEAT_FRACTION).any()]
    cols = min(3, max(1, len(panels)))
    rows = math.ceil(len(panels) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), layout="constrained", dpi=150,
                             squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, panel in zip(axes.flat, panels):
        matrix = mean_jaccard(agreement, panel)
        image = ax.imshow(matrix.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(matrix)), matrix.columns, rotation=40, ha="right", fontsize=7)
        ax.set_yticks(range(len(matrix)), matrix.index, fontsize=7)
        for (i, j), value in np.ndenumerate(matrix.to_numpy(dtype=float)):
            if not math.isnan(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if value > 0.6 else "white")
        ax.set_title(panel, fontsize=8)
    if panels:
        fig.colorbar(image, ax=axes, shrink=0.8, label=f"mean Jaccard at fraction {HEAT_FRACTION:g}")
    fig.savefig(path)
    plt.close(fig)
    return path
