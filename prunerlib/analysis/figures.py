"""Figures from result rows: accuracy against sparsity and against speedup (Pareto fronts
marked, controls shown), and accuracy / sparsity per pruning cycle."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a sweep head node
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.legend_handler import HandlerTuple  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from prunerlib.analysis.labels import (NONE_LABEL, STYLE, data_label, mirrored_pruner,  # noqa: E402
                                      pruner_label, pruner_rank, setting_groups, setting_label, style,
                                      varying_columns)
from prunerlib.analysis.rows import column, final_ok, finetune_budget  # noqa: E402
from prunerlib.analysis.speed import untimed_reason  # noqa: E402
from prunerlib.analysis.speed_figure import CAPTION as SPEED_CAPTION  # noqa: E402
from prunerlib.analysis.speed_figure import measured_vs_theoretical  # noqa: E402
from prunerlib.analysis.stats import Stats  # noqa: E402


@dataclass(frozen=True)
class Figure:
    name: str
    path: Path
    caption: str


@dataclass(frozen=True)
class Point:
    """One setting: its mean ± std over seeds on both axes."""

    method: str  # the pruner, or for a random control the pruner it mirrors
    random: bool
    label: str
    x: Stats
    y: Stats  # test accuracy: what the figure shows
    val: float  # mean validation accuracy: what the Pareto front is chosen on


# --------------------------------------------------------------------------- data
def params_removed(rows: pd.DataFrame) -> pd.Series:
    """Share of all weights and biases removed (%): one axis that every pruner shares."""
    total = pd.to_numeric(column(rows, "params_total"), errors="coerce")
    nonzero = pd.to_numeric(column(rows, "params_nonzero"), errors="coerce")
    ratio = pd.to_numeric(column(rows, "compression_ratio"), errors="coerce")
    return 100 * (1 - nonzero / total).fillna(1 - 1 / ratio)


def speedup(rows: pd.DataFrame) -> pd.Series:
    return pd.to_numeric(column(rows, "theoretical_speedup"), errors="coerce")


def accuracy(rows: pd.DataFrame) -> pd.Series:
    return 100 * pd.to_numeric(rows["acc_finetuned"], errors="coerce")


def panels(ok: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One panel per dataset (and Waveform attribute count), in the paper's order."""
    groups: dict[str, list[pd.DataFrame]] = {}
    for rows in setting_groups(ok):
        groups.setdefault(data_label(rows.iloc[0]), []).append(rows)
    return [(title, pd.concat(frames)) for title, frames in groups.items()]


def points(rows: pd.DataFrame, x: Callable[[pd.DataFrame], pd.Series]) -> list[Point]:
    """One point per setting. Labels name what tells a pruner's settings apart (cycles, lr, ...)
    only when that varies among that pruner's trials, to keep them short."""
    by_method = rows.apply(mirrored_pruner, axis=1)
    extra = {method: varying_columns(rows[by_method == method]) for method in by_method.unique()}
    found = []
    for group in setting_groups(rows):
        first = group.iloc[0]
        xs, ys = x(group), accuracy(group)
        keep = np.isfinite(xs) & np.isfinite(ys)
        if not keep.any():
            continue
        method = mirrored_pruner(first)
        val = 100 * pd.to_numeric(column(group, "val_acc_finetuned"), errors="coerce")[keep]
        found.append(Point(method, first["pruner"] == "random", setting_label(first, extra[method]),
                           Stats.of(xs[keep]), Stats.of(ys[keep]), float(val.mean())))
    return found


def front_of(pts: Sequence[Point]) -> list[int]:
    """The settings on the Pareto front: chosen on validation accuracy, never on the test
    accuracy the figure shows."""
    return pareto_front([p.x.mean for p in pts], [p.val for p in pts])


def pareto_front(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats on both axes (higher x and higher y are
    better), in increasing x."""
    order = sorted(range(len(xs)), key=lambda i: (-xs[i], -ys[i]))
    front, best = [], -math.inf
    for i in order:
        if ys[i] > best:
            front.append(i)
            best = ys[i]
    return sorted(front, key=lambda i: xs[i])


# --------------------------------------------------------------------------- drawing
def _bar(stats: Stats) -> float:
    return 0.0 if math.isnan(stats.std) else stats.std  # one seed: no bar


def _errorbar(ax: Axes, point: Point) -> None:
    colour, marker = style(point.method)
    # a method that removed nothing sits on the none control: draw the method on top
    behind = point.method == "none"
    ax.errorbar(point.x.mean, point.y.mean, xerr=_bar(point.x), yerr=_bar(point.y), fmt=marker, ms=7,
                color=colour, mfc="white" if point.random else colour, mec=colour, mew=1.6,
                ecolor=colour, elinewidth=1, capsize=3, alpha=0.9, zorder=2.5 if behind else 3)


def _none_band(ax: Axes, point: Point) -> None:
    colour = STYLE["none"][0]
    ax.axhline(point.y.mean, color=colour, lw=1, ls=":", zorder=1)
    if not math.isnan(point.y.std):
        ax.axhspan(point.y.mean - point.y.std, point.y.mean + point.y.std, color=colour, alpha=0.12, lw=0, zorder=0)


_LABEL_OFFSETS = ((8, 4), (8, -12), (-8, 4), (-8, -12), (8, 16), (-8, 16), (8, -24), (-8, -24))
_LABEL_BOX = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.9}  # readable over lines


def _annotate(ax: Axes, pts: Sequence[Point]) -> None:
    """Setting labels beside method points, each at the first nearby spot that covers no other
    label or marker (positions from the renderer, so call after the layout is drawn)."""
    nones = [p for p in pts if p.method == "none"]
    # a single none control is the band; several (other epochs, say) need telling apart
    labelled = [p for p in pts if not p.random and (p.method != "none" or len(nones) > 1)]
    if len(labelled) > 10:
        return
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    radius = 14 * ax.figure.dpi / 72 / 2  # the Pareto ring, the largest marker
    taken = [Bbox.from_bounds(x - radius, y - radius, 2 * radius, 2 * radius)
             for x, y in ax.transData.transform([(p.x.mean, p.y.mean) for p in pts])]
    for p in sorted(labelled, key=lambda p: -p.y.mean):
        for dx, dy in _LABEL_OFFSETS:
            label = ax.annotate(p.label, (p.x.mean, p.y.mean), xytext=(dx, dy), textcoords="offset points",
                                ha="left" if dx > 0 else "right", va="center", fontsize=7,
                                color=style(p.method)[0], bbox=_LABEL_BOX, zorder=5)
            label.set_in_layout(False)
            box = label.get_window_extent(renderer)
            fits = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            if fits and not any(box.overlaps(other) for other in taken):
                taken.append(box)
                break
            label.remove()
        else:  # nowhere free: the first spot, overlapping, beats losing the label
            dx, dy = _LABEL_OFFSETS[0]
            ax.annotate(p.label, (p.x.mean, p.y.mean), xytext=(dx, dy), textcoords="offset points", va="center",
                        fontsize=7, color=style(p.method)[0], bbox=_LABEL_BOX,
                        zorder=5).set_in_layout(False)


def _draw_panel(ax: Axes, title: str, pts: Sequence[Point], log_x: bool) -> None:
    for p in pts:
        if p.method == "none" and not p.random:
            _none_band(ax, p)
        _errorbar(ax, p)
    front = front_of(pts)
    ax.plot([pts[i].x.mean for i in front], [pts[i].y.mean for i in front], "--", color="black", lw=1.2, zorder=2)
    for i in front:
        ax.plot(pts[i].x.mean, pts[i].y.mean, "o", ms=13, mfc="none", mec="black", mew=1, zorder=4)
    if log_x:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}×"))
    ax.set_title(title)
    ax.grid(True, alpha=0.3)


def _legend(fig: plt.Figure, methods: set[str], has_random: bool, has_none: bool, columns: int) -> None:
    handles = [Line2D([], [], color=style(m)[0], marker=style(m)[1], ls="", ms=7, label=pruner_label(m))
               for m in sorted(methods, key=lambda m: (pruner_rank(m), m))]
    if has_random:
        handles.append(Line2D([], [], color="0.3", marker="o", mfc="white", ls="", ms=7,
                              label="random control (hollow; marker of the pruner it mirrors)"))
    labels = [h.get_label() for h in handles]
    if has_none:  # the band and the line are one control: one legend entry
        handles.append((Patch(color=STYLE["none"][0], alpha=0.12),
                        Line2D([], [], color=STYLE["none"][0], marker=STYLE["none"][1], ls=":", ms=6)))
        labels.append(NONE_LABEL)
    handles.append(Line2D([], [], color="black", ls="--", marker="o", mfc="none", ms=11))
    labels.append("Pareto front on validation accuracy (means over seeds)")
    fig.legend(handles, labels, loc="outside lower center", ncol=columns, fontsize=8, frameon=False,
               handler_map={tuple: HandlerTuple(ndivide=1)})


def _scatter_figure(ok: pd.DataFrame, x: Callable[[pd.DataFrame], pd.Series], xlabel: str,
                    log_x: Callable[[Sequence[Point]], bool], path: Path) -> None:
    panel_list = panels(ok)
    # one panel alone is made wider, so the legend below it fits in two columns
    fig, axes = plt.subplots(1, len(panel_list), figsize=(max(7.5, 5.2 * len(panel_list)), 5.0), squeeze=False,
                             layout="constrained", dpi=150)
    methods, has_random, has_none = set(), False, False
    drawn: list[tuple[Axes, list[Point]]] = []
    for ax, (title, rows) in zip(axes[0], panel_list):
        pts = points(rows, x)
        if not pts:
            ax.set_title(f"{title}\n(no finite values)")
            continue
        log = log_x(pts)
        _draw_panel(ax, title, pts, log)
        methods |= {p.method for p in pts if p.method != "none"}
        has_random |= any(p.random for p in pts)
        has_none |= any(p.method == "none" for p in pts)
        ax.set_xlabel(xlabel + (", log scale" if log else ""))
        drawn.append((ax, pts))
    axes[0][0].set_ylabel("Fine-tuned test accuracy (%)")
    _legend(fig, methods, has_random, has_none, columns=2 if len(panel_list) == 1 else 3)
    fig.canvas.draw()  # settle the layout, so labels can be placed where they are free
    for ax, pts in drawn:
        _annotate(ax, pts)
    fig.savefig(path, dpi=150)
    plt.close(fig)


def _wide_range(pts: Sequence[Point]) -> bool:
    """Log scale only when the speedups span a wide range: over 1–2× it would show one tick."""
    xs = [p.x.mean for p in pts]
    return max(xs) / min(xs) > 8


def accuracy_vs_removed(ok: pd.DataFrame, path: Path) -> None:
    _scatter_figure(ok, params_removed, "Parameters removed (% of all weights and biases)", lambda _: False, path)


def accuracy_vs_speedup(ok: pd.DataFrame, path: Path) -> None:
    _scatter_figure(ok, speedup, "Speedup, theoretical (FLOPs): dense FLOPs / pruned FLOPs", _wide_range, path)


def _cycle_series(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over trials at each cycle; cycle 0 is the pretrained model (nothing removed)."""
    pre = rows[rows["cycle"].eq(1)]
    start = pd.DataFrame({"cycle": 0, "acc": 100 * pre["acc_pretrain"].astype(float), "removed": 0.0})
    cycles = pd.DataFrame({"cycle": rows["cycle"], "acc": accuracy(rows), "removed": params_removed(rows)})
    both = pd.concat([start, cycles])
    return both.groupby("cycle").agg(acc=("acc", "mean"), acc_sd=("acc", "std"), removed=("removed", "mean"),
                                     removed_sd=("removed", "std"), n=("acc", "size")).reset_index()


def _none_reference(ax: Axes, nones: pd.DataFrame) -> None:
    """The unpruned control's final accuracy, labelled with its fine-tuning epochs so a reader
    sees whether it matches the cycles' total."""
    for budget, rows in nones.groupby(finetune_budget(nones)):
        ax.axhline(accuracy(rows).mean(), color=STYLE["none"][0], ls=":", lw=1.2,
                   label=f"none control after {budget:g} fine-tune epochs (mean)")


def per_cycle(rows_all: pd.DataFrame, path: Path) -> None:
    """Settings whose trials ran more than one cycle: accuracy and sparsity along the cycles."""
    ok = rows_all[rows_all["status"].eq("ok")]
    multi = ok.groupby("trial_id")["cycle"].transform("max") > 1
    panel_list = panels(ok[multi & ok["final"].eq(True)])
    nones = final_ok(rows_all)
    nones = nones[nones["pruner"].eq("none")]
    fig, axes = plt.subplots(2, len(panel_list), figsize=(5.2 * len(panel_list), 7.5), squeeze=False,
                             sharex="col", layout="constrained")
    for column_axes, (title, finals) in zip(axes.T, panel_list):
        for group in setting_groups(finals):
            first = group.iloc[0]
            random = first["pruner"] == "random"
            method = mirrored_pruner(first)
            colour, marker = style(method)
            series = _cycle_series(ok[ok["trial_id"].isin(group["trial_id"])])
            name = f"{pruner_label(first['pruner'])}, {setting_label(first)}"
            for ax, value in zip(column_axes, ("acc", "removed")):
                ax.errorbar(series["cycle"], series[value], yerr=series[f"{value}_sd"].fillna(0), marker=marker,
                            color=colour, mfc="white" if random else colour, ls="--" if random else "-",
                            capsize=3, label=name)
        _none_reference(column_axes[0], nones[nones.apply(data_label, axis=1).eq(title)] if len(nones) else nones)
        column_axes[0].set_title(title)
        column_axes[1].set_xlabel("Pruning cycle (0 = pretrained model)")
        column_axes[1].xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        for ax in column_axes:
            ax.grid(True, alpha=0.3)
        column_axes[0].legend(fontsize=7, loc="best")
    axes[0][0].set_ylabel("Fine-tuned test accuracy (%)")
    axes[1][0].set_ylabel("Parameters removed (%)")
    fig.savefig(path, dpi=150)
    plt.close(fig)


# --------------------------------------------------------------------------- the figure set
_NEEDS = {
    "accuracy_vs_removed": ("params_total", "params_nonzero"),
    "accuracy_vs_speedup": ("theoretical_speedup",),
    "accuracy_per_cycle": ("acc_pretrain", "params_total", "params_nonzero"),
    "measured_vs_theoretical": ("theoretical_speedup",),  # the timing columns: untimed_reason
}
CAPTIONS = {
    "accuracy_vs_removed": "Fine-tuned test accuracy against the share of parameters removed, one point per setting "
                           "(mean ± std over seeds). Filled: pruning methods; hollow: random controls; dotted line "
                           "and band: the none control (unpruned, same epochs). Circled points joined by the dashed "
                           "line form the Pareto front, chosen on validation accuracy (no other setting is both sparser and "
                           "more accurate on the validation slice); the test accuracy is only shown.",
    "accuracy_vs_speedup": "Fine-tuned test accuracy against the theoretical speedup (dense FLOPs / FLOPs of the "
                           "pruned network; measured speedups are in the next figure); markers as in the previous "
                           "figure.",
    "accuracy_per_cycle": "Settings whose trials ran more than one pruning cycle: fine-tuned test accuracy (top) "
                          "and share of parameters removed (bottom) per cycle, mean ± std over the trials that "
                          "reached that cycle; cycle 0 is the pretrained model.",
    "measured_vs_theoretical": SPEED_CAPTION,
}
_DRAW: dict[str, Callable[[pd.DataFrame, pd.DataFrame, Path], None]] = {
    "accuracy_vs_removed": lambda ok, _, path: accuracy_vs_removed(ok, path),
    "accuracy_vs_speedup": lambda ok, _, path: accuracy_vs_speedup(ok, path),
    "accuracy_per_cycle": lambda _, rows, path: per_cycle(rows, path),
    "measured_vs_theoretical": lambda ok, _, path: measured_vs_theoretical(ok, path),
}


def _skip_reason(name: str, df: pd.DataFrame, ok: pd.DataFrame) -> str | None:
    missing = [c for c in _NEEDS[name] if c not in df.columns]
    if missing:
        return f"figure {name}: the results have no column(s) {', '.join(missing)}"
    if ok.empty:
        return f"figure {name}: no final ok rows"
    if name == "accuracy_per_cycle" and not (df["status"].eq("ok") & df["cycle"].gt(1)).any():
        return f"figure {name}: no successful trial ran more than one pruning cycle"
    if name == "measured_vs_theoretical":
        return untimed_reason(df, f"figure {name}")
    return None


def make_figures(df: pd.DataFrame, out_dir: Path) -> tuple[list[Figure], list[str]]:
    """Every figure that can be drawn, and one message per figure that cannot."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ok = final_ok(df)
    figures, skipped = [], []
    for name, draw in _DRAW.items():
        reason = _skip_reason(name, df, ok)
        if reason:
            skipped.append(reason)
            continue
        path = out_dir / f"{name}.png"
        draw(ok, df, path)
        figures.append(Figure(name, path, CAPTIONS[name]))
    return figures, skipped
