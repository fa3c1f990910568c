"""The report's sensitivity section: what `prunerlib sensitivity` wrote (one layer pruned at a
time, no fine-tuning), as curves per layer, the criteria's agreement, and whether any criterion
is distinguishable from random.

Found from the report's result paths: a `sensitivity.parquet` given as a path, or lying inside a
given folder or beside a given file; its `agreement.parquet` beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from prunerlib.analysis.stats import Stats, holm, t_two_sided_p

SCAN_FILE, AGREEMENT_FILE = "sensitivity.parquet", "agreement.parquet"  # as prunerlib.sensitivity writes them
SCAN_FILES = (SCAN_FILE, AGREEMENT_FILE)
WHAT = {"filters": "filters", "units": "units", "weights": "incoming weights"}
ALPHA = 0.05
HEAT_FRACTION = 0.5


def scan_files(paths: Sequence[Path]) -> tuple[Path, ...]:
    """The sensitivity files the report's paths name or hold, each once."""
    found = []
    for path in paths:
        if path.name == SCAN_FILE and path.is_file():
            found.append(path)
        for near in (path / SCAN_FILE if path.is_dir() else path.with_name(SCAN_FILE),):
            if near.is_file():
                found.append(near)
    return tuple(dict.fromkeys(p.resolve() for p in found))


def only_a_scan(path: Path) -> bool:
    """A path that holds a scan and no trial rows: a scan file, or a scan's folder (no trials/)."""
    if path.name in SCAN_FILES:
        return True
    return path.is_dir() and (path / SCAN_FILE).is_file() and not (path / "trials").is_dir() \
        and not (path / "results.parquet").is_file()


@dataclass(frozen=True)
class Scan:
    rows: pd.DataFrame  # sensitivity rows, with `panel` (data and layer) and `data` labels
    agreement: pd.DataFrame  # empty when no agreement.parquet lies beside


def load_scans(files: Sequence[Path]) -> Scan:
    rows = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    near = [f.with_name(AGREEMENT_FILE) for f in files if f.with_name(AGREEMENT_FILE).is_file()]
    agree = pd.concat([pd.read_parquet(f) for f in near], ignore_index=True) if near else pd.DataFrame()
    key = ["scan", "seed", "layer", "what", "criterion", "fraction"]
    rows = rows.drop_duplicates(subset=key, keep="last")  # a file given twice
    return Scan(_labelled(rows), _labelled(agree) if len(agree) else agree)


def _labelled(frame: pd.DataFrame) -> pd.DataFrame:
    def data(row: pd.Series) -> str:
        if row["dataset"] == "waveform":
            return f"Waveform, {int(row['attributes'])} attr."
        return f"Dogs vs. Cats, {row['image_size']} px"
    frame = frame.copy()
    frame["data"] = [data(r) for _, r in frame.iterrows()]
    frame["panel"] = frame["data"] + ": " + frame["layer"] + " " + frame["what"].map(WHAT)
    return frame


def curve(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per criterion and fraction: mean, the 95% t interval over seeds (NaN with one seed), n."""
    out = []
    for (criterion, fraction), group in rows.groupby(["criterion", "fraction"]):
        stats = Stats.of(group[metric])
        low, high = stats.ci() or (math.nan, math.nan)
        out.append({"criterion": criterion, "fraction": fraction, "mean": stats.mean, "low": low, "high": high,
                    "n": stats.n})
    return pd.DataFrame(out)


@dataclass(frozen=True)
class Comparison:
    panel: str
    criterion: str
    fraction: float
    n: int
    diff: float  # mean paired difference, criterion − random, in validation accuracy
    p: float  # two-sided paired t test; NaN when untestable (one seed, or every pair differs alike)
    p_adj: float = math.nan


def against_random(rows: pd.DataFrame) -> list[Comparison]:
    """Each criterion against random at each fraction of each panel, paired by seed on validation
    accuracy (the test set is only reported), Holm-adjusted together across the section."""
    found = []
    for panel, layer in rows.groupby("panel", sort=False):
        wide = layer.pivot_table(index=["scan", "seed", "fraction"], columns="criterion", values="acc_val")
        if "random" not in wide.columns:
            continue
        for criterion in [c for c in wide.columns if c != "random"]:
            for fraction, part in wide.groupby(level="fraction"):
                d = (part[criterion] - part["random"]).dropna().to_numpy()
                found.append(Comparison(panel, criterion, float(fraction), len(d), *_paired_t(d)))
    tested = [i for i, c in enumerate(found) if not math.isnan(c.p)]
    adjusted = holm([found[i].p for i in tested])
    for i, p in zip(tested, adjusted):
        c = found[i]
        found[i] = Comparison(c.panel, c.criterion, c.fraction, c.n, c.diff, c.p, p)
    return found


def _paired_t(d: np.ndarray) -> tuple[float, float]:
    stats = Stats.of(d)
    if stats.n < 2 or not stats.std > 0:
        return stats.mean, math.nan
    return stats.mean, t_two_sided_p(stats.mean / (stats.std / math.sqrt(stats.n)), stats.n - 1)


def verdicts(rows: pd.DataFrame, comparisons: list[Comparison]) -> list[str]:
    """One sentence per panel: which criteria differ from random, at which fractions, which way."""
    sentences = []
    for panel, layer in rows.groupby("panel", sort=False):
        seeds = layer.groupby("scan")["seed"].nunique().min()
        mine = [c for c in comparisons if c.panel == panel]
        if not mine:
            sentences.append(f"**{panel}**: no random criterion in the scan, nothing to compare against.")
            continue
        if seeds < 2:
            sentences.append(f"**{panel}**: one seed only; a paired test against random needs at least two.")
            continue
        found = {}
        for c in mine:
            if c.p_adj < ALPHA:
                found.setdefault(c.criterion, []).append(f"{'+' if c.diff > 0 else '−'}{abs(c.diff) * 100:.1f} "
                                                         f"points at {c.fraction:g}")
        if not found:
            best = min((c for c in mine if not math.isnan(c.p_adj)), key=lambda c: c.p, default=None)
            closest = "" if best is None else (f"; closest: {best.criterion} at {best.fraction:g}, "
                                               f"{best.diff * 100:+.1f} points, adjusted p {best.p_adj:.2g}")
            sentences.append(f"**{panel}**: none — no criterion's validation accuracy differs from random's at "
                             f"any fraction ({seeds} seeds, Holm-adjusted p ≥ {ALPHA:g}{closest}).")
        else:
            said = "; ".join(f"{name} ({', '.join(where)})" for name, where in sorted(found.items()))
            sentences.append(f"**{panel}**: distinguishable from random ({seeds} seeds, Holm-adjusted p < "
                             f"{ALPHA:g}; mean paired difference in validation accuracy): {said}.")
    return sentences


def mean_jaccard(agreement: pd.DataFrame, panel: str, fraction: float = HEAT_FRACTION) -> pd.DataFrame:
    """Criteria × criteria mean Jaccard over seeds at `fraction` (diagonal 1), for the heat map."""
    part = agreement[(agreement["panel"] == panel) & np.isclose(agreement["fraction"], fraction)]
    means = part.groupby(["criterion_a", "criterion_b"])["jaccard"].mean()
    names = sorted(set(part["criterion_a"]) | set(part["criterion_b"]))
    matrix = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for (a, b), value in means.items():
        matrix.loc[a, b] = matrix.loc[b, a] = value
    return matrix


def chance_jaccard(k: float, n: float) -> float:
    """Expected Jaccard overlap of two random k-subsets of n: (k²/n) / (2k − k²/n) = k / (2n − k)."""
    return k / (2 * n - k) if n > 0 and 0 < k <= n else math.nan


def agreement_lines(agreement: pd.DataFrame) -> list[str]:
    """Spearman of the scores per pair (mean [95% CI] over seeds), and distinctiveness's set."""
    if agreement.empty:
        return []
    lines = []
    for panel, part in agreement.groupby("panel", sort=False):
        ranked = part[part["spearman"].notna()].drop_duplicates(["scan", "seed", "criterion_a", "criterion_b"])
        pairs = []
        for (a, b), group in ranked.groupby(["criterion_a", "criterion_b"]):
            stats = Stats.of(group["spearman"])
            ci = stats.ci()
            pairs.append(f"{a}–{b} {stats.mean:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else ""))
        dist = part[part["criterion_a"] == "distinctiveness"]
        text = f"- **{panel}**: Spearman ρ of the scores: {'; '.join(pairs) or 'none computable'}."
        if len(dist):
            removed = Stats.of(dist.drop_duplicates(["scan", "seed"])["removed"]).mean
            overlap = dist.groupby("criterion_b")["jaccard"].mean()
            width = dist["removed"].iloc[0] / dist["fraction"].iloc[0] if dist["fraction"].iloc[0] else math.nan
            text += (f" Distinctiveness at {dist['angle_cutoff'].iloc[0]:g}° removes {removed:.1f} units on average; "
                     "its set's mean Jaccard with each criterion's as many lowest-scoring units: "
                     + ", ".join(f"{k} {'n/a' if math.isnan(v) else f'{v:.2f}'}" for k, v in overlap.items())
                     + f" (two random sets of that size: {chance_jaccard(removed, width):.2f}).")
        lines.append(text)
    return lines


def sensitivity_section(files: Sequence[Path], out_dir: Path) -> list[str]:
    """The section's markdown, its figures written into `out_dir`."""
    from prunerlib.analysis.sensitivity_figure import curve_figure, heat_figure

    scan = load_scans(files)
    comparisons = against_random(scan.rows)
    lines = ["## Sensitivity: one layer at a time, without fine-tuning", "",
             "Each structure pruned alone from the pretrained model by each criterion, the same ranking cut at "
             "every fraction (`prunerlib sensitivity`; files: " + ", ".join(f"`{f}`" for f in files) + "). "
             "Lines: mean over seeds; bands: 95% Student-t intervals; random dashed grey; dotted: the unpruned "
             "model. APoZ counts exact zeros: on sigmoid units it ties everywhere and keeps index order.", ""]
    for i, (panel, rows) in enumerate(scan.rows.groupby("panel", sort=False)):
        path = curve_figure(rows, panel, out_dir / f"sensitivity_{i + 1}.png")
        lines += [f"![{panel}]({path.name})", "", f"*{panel}: validation (left) and test (right) accuracy against "
                                                   f"the share removed.*", ""]
    lines += ["### Which criterion, if any, differs from random?", "",
              f"Paired by seed on validation accuracy at each fraction; {sum(not math.isnan(c.p) for c in comparisons)} "
              "tests, Holm-adjusted together.", "", *[f"- {s}" for s in verdicts(scan.rows, comparisons)], ""]
    if not scan.agreement.empty:
        heat = heat_figure(scan.agreement, out_dir / "sensitivity_agreement.png")
        lines += ["### Do the criteria agree?", "", f"![criteria agreement]({heat.name})", "",
                  f"*Mean Jaccard overlap over seeds of the sets two criteria remove at fraction {HEAT_FRACTION:g}, "
                  f"per layer (1: the same units; two random sets overlap by {chance_jaccard(HEAT_FRACTION, 1):.2f}).*", "", *agreement_lines(scan.agreement), ""]
    return lines
