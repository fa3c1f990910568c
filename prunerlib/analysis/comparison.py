"""The honest comparison: each method against the pretrained model, the `none` control and the
`random` control on the same seeds, every paired test adjusted together (Holm), in a table and
in words; and the table of every setting."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from prunerlib.analysis.columns import TABLE1_COLUMNS, TABLE3_COLUMNS
from prunerlib.analysis.coverage import coverage_note
from prunerlib.analysis.labels import (as_text, data_label, fmt_ci, fmt_signed, fmt_stats, setting_groups, setting_label,
                                       varying_columns)
from prunerlib.analysis.pairing import Arms, none_controls, pair, paired_differences, within_differences
from prunerlib.analysis.published import published_gain
from prunerlib.analysis.rows import MissingData, column, final_ok, require
from prunerlib.analysis.stats import Stats, holm, t_two_sided_p
from prunerlib.analysis.tables import Cell, Table, cnn_cells, waveform_cells


@dataclass(frozen=True)
class Difference:
    """Method minus a reference over paired trials, in percentage points."""

    against: str  # 'pretrained', 'none', 'random'
    values: pd.Series
    paper: float | None = None
    budget_mismatches: int = 0
    trials: tuple[str, ...] = ()  # the method's trial ids: with `against`, what makes two comparisons one

    @property
    def stats(self) -> Stats:
        return Stats.of(self.values)

    @property
    def p(self) -> float:
        """Two-sided paired t test of 'no difference'; nan (no test) with fewer than two pairs or
        when every pair differs by the same amount: accuracies come in steps of 1 / n_test, so two
        seeds often tie, and a zero spread is no evidence of a certain difference."""
        stats = self.stats
        if stats.n < 2 or not stats.std > 1e-9 * max(1.0, abs(stats.mean)):  # float noise of equal differences
            return math.nan
        return t_two_sided_p(stats.mean / (stats.std / math.sqrt(stats.n)), stats.n - 1)

    @property
    def key(self) -> tuple[tuple[str, ...], str]:
        return self.trials, self.against


ALPHA = 0.05  # family-wise error of the report's verdicts, all together


@dataclass(frozen=True)
class Family:
    """The report's paired comparisons as one family of claims. Dozens of comparisons at 5%
    each would make about one in twenty 'significant' by chance, so every verdict uses its
    Holm-adjusted p-value: all verdicts together are wrong with probability at most ALPHA.
    Comparisons without a test (one pair, or no spread) are not in the family."""

    adjusted_p: Mapping[tuple[tuple[str, ...], str], float]

    @classmethod
    def of(cls, diffs: Iterable[Difference]) -> Family:
        tested = {d.key: d.p for d in diffs if not math.isnan(d.p)}  # the same comparison twice counts once
        return cls(dict(zip(tested, holm(list(tested.values())))))

    @property
    def size(self) -> int:
        return len(self.adjusted_p)

    def adjusted(self, diff: Difference) -> float:
        return self.adjusted_p.get(diff.key, math.nan)

    def words(self) -> str:
        return (f"Holm–Bonferroni over the report's {self.size} paired comparisons with two or more seeds "
                f"(family-wise error {ALPHA:.0%})")


def differences(ok: pd.DataFrame, rows: pd.DataFrame, paper_gain: float | None = None) -> list[Difference]:
    """The paper's comparison (fine-tuned − pretrained, within each trial) and the honest ones
    (fine-tuned − none control, − random control, on the same seeds)."""
    arms = Arms.of(ok, rows)
    none, rand = paired_differences(arms.none), paired_differences(arms.random)
    trials = _trial_ids(rows)
    return [
        Difference("pretrained", within_differences(rows), paper_gain, trials=trials),
        Difference("none", none["diff"], budget_mismatches=int(none["same_budget"].eq(False).sum()), trials=trials),
        Difference("random", rand["diff"], trials=trials),
    ]


def _trial_ids(rows: pd.DataFrame) -> tuple[str, ...]:
    return tuple(sorted(rows["trial_id"].map(as_text)))


def none_difference(ok: pd.DataFrame, rows: pd.DataFrame) -> Difference:
    """A setting's fine-tuned accuracy against the none control on the same seeds (all-settings table)."""
    if rows.iloc[0]["pruner"] == "none":
        return Difference("none", pd.Series([], dtype=float), trials=_trial_ids(rows))
    return Difference("none", paired_differences(pair(rows, none_controls(ok)))["diff"], trials=_trial_ids(rows))


def comparison_family(df: pd.DataFrame) -> Family:
    """Every paired comparison the report shows: the honest comparison table's rows and the
    all-settings table's differences against none (a setting that is also a table cell once)."""
    ok = final_ok(df)
    diffs = [none_difference(ok, rows) for rows in setting_groups(ok)]
    if "acc_pretrain" in ok.columns:
        diffs += [d for _, cell, gain in comparison_cells(ok) for d in differences(ok, cell.rows, gain)]
    return Family.of(diffs)


def _verdict(diff: Difference, family: Family) -> str:
    """The direction of a difference when it survives the Holm correction."""
    stats = diff.stats
    if stats.n == 0:
        return "no paired trials"
    if stats.n == 1:
        return "n=1, not tested"
    if math.isnan(diff.p):
        return "no spread, not tested"
    if family.adjusted(diff) < ALPHA:
        return f"{'higher' if stats.mean > 0 else 'lower'} (supported after Holm correction)"
    return "not supported"


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}" if p < 0.01 else f"{p:.2f}"


_AGAINST = {"pretrained": "fine-tuned − pretrained (the paper's comparison)",
            "none": "method − none control (same seeds, same epochs)",
            "random": "method − random control (same seeds, same sparsity)"}


def comparison_cells(ok: pd.DataFrame) -> list[tuple[str, Cell, float | None]]:
    """(table name, cell, paper's gain) for every accuracy cell that has trials."""
    cells: list[tuple[str, Cell, float | None]] = []
    if all(c in ok.columns for c in TABLE1_COLUMNS):
        cells += [("Table 1", c, published_gain(c.attributes, c.method)) for c in waveform_cells(ok)]
    if all(c in ok.columns for c in TABLE3_COLUMNS):
        cells += [("Table 3", c, None) for c in cnn_cells(ok)]
    return [(table, cell, gain) for table, cell, gain in cells if not cell.rows.empty]


def comparison_table(df: pd.DataFrame, family: Family | None = None) -> Table:
    require(df, ("acc_pretrain",), "Honest comparison")
    ok = final_ok(df)
    cells = comparison_cells(ok)
    if not cells:
        raise MissingData("Honest comparison: no final ok rows for any method cell of Tables 1 or 3 "
                          "(or the columns those tables need are missing)")
    family = family or comparison_family(df)
    records = []
    for table, cell, gain in cells:
        for diff in differences(ok, cell.rows, gain):
            stats, interval = diff.stats, diff.stats.ci()
            records.append({
                "Table": table, "Row": cell.title, "Comparison": _AGAINST[diff.against],
                "n": stats.n, "mean": stats.mean, "std": stats.std,
                "ci_low": interval[0] if interval else math.nan, "ci_high": interval[1] if interval else math.nan,
                "p": diff.p, "p_holm": family.adjusted(diff),
                "paper": math.nan if diff.paper is None else diff.paper,
                "budget_mismatches": diff.budget_mismatches, "verdict": _verdict(diff, family),
            })
    data = pd.DataFrame(records)
    display = pd.DataFrame([{
        "Table": r["Table"], "Row": r["Row"], "Comparison": r["Comparison"], "n": str(r["n"]),
        "Mean difference (pp)": fmt_signed(r["mean"]),
        "95% CI (pp)": fmt_ci(Stats(int(r["n"]), r["mean"], r["std"])),
        "p (Holm)": fmt_p(r["p_holm"]),
        "Paper (pp)": fmt_signed(r["paper"]),
        "Verdict": r["verdict"],
    } for _, r in data.iterrows()])
    notes = ("Paired differences in percentage points, fine-tuned test accuracy. A method trial pairs with the "
             "control trials of the same data, seed, network and pretraining; "
             "95% CI = mean ± t(0.975, n−1)·sd/√n, for each comparison on its own.",
             coverage_note((cell.rows for _, cell, _ in cells), "CIs", paired=True),
             f"p (Holm): two-sided paired t test, adjusted by {family.words()}. A verdict names the direction "
             f"only when that adjusted p < {ALPHA:g}; otherwise the difference is not supported, even where its own "
             "95% CI excludes 0.",
             *(f"{r['Row']}: {int(r['budget_mismatches'])} none-control pair(s) ran a different number of "
               "fine-tuning epochs" for _, r in data.iterrows() if r["budget_mismatches"]))
    return Table("comparison", "Honest comparison — does pruning improve accuracy?", data, display, notes)


def _interval_words(diff: Difference, family: Family) -> str:
    stats, interval = diff.stats, diff.stats.ci()
    if interval is None:
        return f"{fmt_signed(stats.mean)} pp (n={stats.n}, no CI)"
    return (f"{fmt_signed(stats.mean)} pp (95% CI {fmt_signed(interval[0])} to {fmt_signed(interval[1])}, "
            f"n={stats.n}, Holm-adjusted p {fmt_p(family.adjusted(diff))})")


def claim_sentence(title: str, diffs: Sequence[Difference], family: Family) -> str:
    """Whether 'pruning improves accuracy' holds for one table row, in words; a verdict holds
    only after the Holm correction over the report's whole family of comparisons."""
    by = {d.against: d for d in diffs}
    gain, none, rand = by["pretrained"], by["none"], by["random"]
    paper = f"; paper {fmt_signed(gain.paper)} pp" if gain.paper is not None else ""
    over = f"after Holm correction over {family.size} comparisons"
    text = [f"**{title}**: fine-tuned minus pretrained (the paper's comparison), "
            f"{_interval_words(gain, family)}{paper}."]
    verdict = _verdict(none, family)
    against = f"Against the `none` control trained for the same epochs, {_interval_words(none, family)}: "
    if verdict.startswith("higher"):
        text.append(against + f"the claim that pruning improves accuracy **holds**: supported {over}.")
    elif verdict.startswith("lower"):
        text.append(against + f"the claim **does not hold** — pruning costs accuracy (supported {over}).")
    elif verdict == "not supported":
        text.append(against + f"the claim is **not supported** {over} — no difference from simply training "
                    "longer survives it.")
    elif verdict == "n=1, not tested":
        text.append(f"Against the `none` control, {_interval_words(none, family)}: **cannot be judged** from one seed.")
    elif verdict == "no spread, not tested":
        text.append(f"Against the `none` control, {_interval_words(none, family)}: **cannot be judged** — every seed "
                    "differs by the same amount, so a t test has no spread to judge it by.")
    else:
        text.append("There is no paired `none` control: the claim **cannot be judged**.")
    if rand.stats.n:
        criterion = {"n=1, not tested": "one seed only", "no spread, not tested": "every seed differs by the same "
                     "amount, not tested",
                     "not supported": "no difference from random removal survives the Holm correction",
                     "higher": f"the pruning criterion beats random removal (supported {over})",
                     "lower": f"random removal does better than the criterion (supported {over})",
                     }[_verdict(rand, family).split(" (")[0]]
        text.append(f"Against `random` removal at the same sparsity, {_interval_words(rand, family)}: {criterion}.")
    return " ".join(text)


def claim_sentences(df: pd.DataFrame, family: Family | None = None) -> list[str]:
    ok = final_ok(df)
    if "acc_pretrain" not in ok.columns:
        return []
    family = family or comparison_family(df)
    return [claim_sentence(f"{table}, {cell.title}", differences(ok, cell.rows, gain), family)
            for table, cell, gain in comparison_cells(ok)]


# --------------------------------------------------------------------------- every setting
_SETTING_VALUES = (("Pretrained acc. (%)", "acc_pretrain", 100), ("Fine-tuned acc. (%)", "acc_finetuned", 100),
                   ("Units removed (%)", "units_removed_frac", 100),
                   ("Weights removed (%)", "weights_removed_frac", 100),
                   ("Filters removed (%)", "filters_removed_frac", 100),
                   ("Speedup (×)", "theoretical_speedup", 1))


def all_settings_table(df: pd.DataFrame, family: Family | None = None) -> Table:
    ok = final_ok(df)
    groups = setting_groups(ok)
    if not groups:
        raise MissingData("All settings: no final ok rows")
    family = family or comparison_family(df)
    extra = {dataset: varying_columns(rows) for dataset, rows in ok.groupby("dataset")}
    records, display = [], []
    for rows in groups:
        first = rows.iloc[0]
        label = setting_label(first, extra.get(first["dataset"], ()))
        pruner = first["pruner"] if first["pruner"] != "random" else f"random ({as_text(first.get('match'))})"
        record: dict[str, Any] = {"Data": data_label(first), "Pruner": pruner, "Setting": label, "n": len(rows)}
        shown = dict(record, n=str(len(rows)))
        for title, name, scale in _SETTING_VALUES:
            stats = Stats.of(scale * pd.to_numeric(column(rows, name), errors="coerce"))
            record |= {f"{name}_mean": stats.mean, f"{name}_std": stats.std}
            shown[title] = fmt_stats(stats, with_n=False)
        diff = none_difference(ok, rows)
        delta, interval = diff.stats, diff.stats.ci()
        record |= {"delta_none_n": delta.n, "delta_none_mean": delta.mean,
                   "delta_none_ci_low": interval[0] if interval else math.nan,
                   "delta_none_ci_high": interval[1] if interval else math.nan,
                   "delta_none_p": diff.p, "delta_none_p_holm": family.adjusted(diff)}
        shown["Δ acc. vs none (pp), 95% CI"] = (f"{fmt_signed(delta.mean)} {fmt_ci(delta)}" if delta.n else "—")
        shown["p vs none (Holm)"] = fmt_p(family.adjusted(diff))
        records.append(record)
        display.append(shown)
    notes = ("Every setting in the results (final cycle of each successful trial), mean ± sample std over seeds. "
             "Δ vs none: paired fine-tuned accuracy difference against the none control on the same seeds, with its "
             f"own 95% CI and its p-value adjusted by {family.words()}; only p < {ALPHA:g} is a supported difference.",
             coverage_note(groups, "± values and CIs"))
    return Table("all_settings", "All settings", pd.DataFrame(records), pd.DataFrame(display), notes)
