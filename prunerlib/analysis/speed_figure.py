"""The figure of measured against theoretical speedup: one point per setting (mean ± std over
seeds), a row of panels per data and a column per batch size, the y = x line the FLOP count promises."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a sweep head node
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from prunerlib.analysis.labels import (data_label, mirrored_pruner, pruner_label, pruner_rank, setting_groups,  # noqa: E402
                                      style)
from prunerlib.analysis.speed import batch_words, numbers, timed  # noqa: E402
from prunerlib.analysis.stats import Stats  # noqa: E402

CAPTION = ("Measured against theoretical speedup, one point per setting (mean ± std over seeds), a row per data: left "
           "at the batch size the trials were timed at, right at batch 1. Dashed: y = x, what the FLOP count promises; dotted: "
           "y = 1, no speedup on the clock. Filled: pruning methods; hollow: random controls (marker of the pruner "
           "they mirror); grey diamond: the none control. Points below the diagonal run slower than their FLOPs "
           "say; see the measured speedup table for why.")


@dataclass(frozen=True)
class SpeedPoint:
    method: str  # the pruner, or for a random control the pruner it mirrors
    random: bool
    data: str
    theoretical: Stats
    measured: Stats


def speed_points(ok: pd.DataFrame, measured: str) -> list[SpeedPoint]:
    found = []
    for group in setting_groups(timed(ok)):
        xs, ys = numbers(group, "theoretical_speedup"), numbers(group, measured)
        keep = np.isfinite(xs) & np.isfinite(ys) & (xs > 0) & (ys > 0)
        if keep.any():
            first = group.iloc[0]
            found.append(SpeedPoint(mirrored_pruner(first), first["pruner"] == "random", data_label(first),
                                    Stats.of(xs[keep]), Stats.of(ys[keep])))
    return found


def _bars(stats: Stats) -> list[list[float]]:
    """A std bar that stays above zero on a log axis; one seed: no bar."""
    sd = 0.0 if math.isnan(stats.std) else stats.std
    return [[min(sd, 0.5 * stats.mean)], [sd]]


def _draw(ax: Axes, pts: Sequence[SpeedPoint], title: str, limits: tuple[float, float]) -> None:
    low, high = limits
    ax.set(xscale="log", yscale="log", xlim=limits, ylim=limits, title=title, aspect="equal",
           xlabel="Speedup, theoretical (FLOPs): dense / pruned FLOPs")
    ax.plot([low, high], [low, high], "--", color="black", lw=1, zorder=1)
    ax.axhline(1.0, color="0.5", ls=":", lw=1, zorder=1)
    ax.annotate("FLOPs promise (y = x)", (high / 1.6, high / 1.6), rotation=45, rotation_mode="anchor",
                ha="right", va="bottom", fontsize=8, xytext=(0, 3), textcoords="offset points")
    for p in pts:
        colour, marker = style(p.method)
        ax.errorbar(p.theoretical.mean, p.measured.mean, xerr=_bars(p.theoretical), yerr=_bars(p.measured),
                    fmt=marker, ms=7, color=colour, mfc="white" if p.random else colour, mec=colour, mew=1.6,
                    ecolor=colour, elinewidth=1, capsize=3, alpha=0.9, zorder=2.5 if p.random else 3)
    for axis in (ax.xaxis, ax.yaxis):  # after set_xscale, which resets them
        axis.set_major_locator(matplotlib.ticker.LogLocator(base=2, subs=(1.0, 1.5)))
        axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}×"))
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(True, which="major", alpha=0.25)


def _limits(panels: Sequence[Sequence[SpeedPoint]]) -> tuple[float, float]:
    """One square range for both panels and both axes, with 1× inside, so y = x is the diagonal."""
    values = [v for pts in panels for p in pts
              for v in (p.theoretical.mean + _bars(p.theoretical)[1][0], p.measured.mean + _bars(p.measured)[1][0],
                        p.theoretical.mean - _bars(p.theoretical)[0][0], p.measured.mean - _bars(p.measured)[0][0])]
    return min([1.0, *values]) / 1.25, max([2.0, *values]) * 1.25


def measured_vs_theoretical(ok: pd.DataFrame, path: Path) -> None:
    panels = [speed_points(ok, "measured_speedup"), speed_points(ok, "measured_speedup_b1")]
    limits = _limits(panels)
    # A row of panels per data: an FFN's and a CNN's points in one panel would need labels to tell apart.
    datas = list(dict.fromkeys(p.data for pts in panels for p in pts))
    fig, axes = plt.subplots(len(datas), 2, figsize=(10, 0.9 + 4.3 * len(datas)), layout="constrained", dpi=150,
                             squeeze=False)
    for row, data in zip(axes, datas):
        for ax, pts, batch in zip(row, panels, (batch_words(timed(ok)), "1")):
            _draw(ax, [p for p in pts if p.data == data], f"{data}: batch {batch}", limits)
        row[0].set_ylabel("Speedup, measured: dense / pruned latency")
    methods = {p.method for pts in panels for p in pts}
    handles = [Line2D([], [], color=style(m)[0], marker=style(m)[1], ls="", ms=7, label=pruner_label(m))
               for m in sorted(methods, key=lambda m: (pruner_rank(m), m))]
    if any(p.random for pts in panels for p in pts):
        handles.append(Line2D([], [], color="0.3", marker="o", mfc="white", ls="", ms=7,
                              label="random control (hollow; marker of the pruner it mirrors)"))
    handles += [Line2D([], [], color="black", ls="--", label="FLOPs promise: measured = theoretical (y = x)"),
                Line2D([], [], color="0.5", ls=":", label="no measured speedup (y = 1)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(3, len(handles)), fontsize=8, frameon=False)
    fig.savefig(path, dpi=150)
    plt.close(fig)
