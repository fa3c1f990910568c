"""Tables, figures and `report.md` for one or more sweeps' result files; prints the report's path.

    python analysis/report.py RESULTS [RESULTS ...] --out DIR
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Iterable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the `analysis` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from analysis.paper_tables import write_tables  # noqa: E402
from analysis.pareto import Figure, make_figures  # noqa: E402
from analysis.results import Results, load_results, run_cli  # noqa: E402
from analysis.tables import (DATASET_NAMES, SETTING_COLUMNS, Table, as_text, claim_sentences, column,  # noqa: E402
                             comparison_family, final_ok, to_markdown)

TABLE_ORDER = ("table1", "table2", "table3", "comparison", "all_settings")


# --------------------------------------------------------------------------- provenance
def _counts(values: pd.Series, limit: int = 6) -> str:
    """'a (3 trials), b (1 trial)'; the rarest beyond `limit` summarised."""
    counts = values.map(as_text).replace("", "unknown").value_counts()
    shown = [f"{value} ({n} trial{'s' if n != 1 else ''})" for value, n in counts.head(limit).items()]
    rest = len(counts) - limit
    return ", ".join(shown + ([f"and {rest} more"] if rest > 0 else [])) or "unknown"


def _trials(df: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: its final row (the failed row for a failed trial)."""
    finals = df[df["final"].eq(True)]
    return finals.drop_duplicates("trial_id", keep="last")


def _sort_key(text: str) -> tuple[int, float, str]:
    try:
        return 0, float(text), text
    except ValueError:
        return 1, 0.0, text


def _values(rows: pd.DataFrame, name: str) -> list[str]:
    return sorted({as_text(v) for v in column(rows, name)} - {""}, key=_sort_key)


def settings_lines(ok: pd.DataFrame) -> list[str]:
    """Per dataset: the settings every trial shared, and those the sweep varied."""
    lines = []
    for dataset, rows in ok.groupby("dataset"):
        fixed, varied = [], []
        for name in ("attributes", "data_seed", *SETTING_COLUMNS):
            values = _values(rows, name)
            if len(values) == 1:
                fixed.append(f"{name}={values[0]}")
            elif len(values) > 1:
                varied.append(f"{name} ∈ {{{', '.join(values)}}}")
        seeds = _values(rows, "seed")
        lines.append(f"- **{DATASET_NAMES.get(dataset, dataset)}**: seeds {', '.join(seeds)}. "
                     f"Varied: {'; '.join(varied) or 'nothing but the pruner'}. "
                     f"Same in every trial (where it applies): {', '.join(fixed)}.")
    return lines


def wall_time_lines(df: pd.DataFrame) -> list[str]:
    ok = df[df["status"].eq("ok")]
    trials = _trials(ok)
    trained = trials[column(trials, "pretrain_reused").eq(False)]
    pretrain = pd.to_numeric(column(trained, "wall_pretrain_s"), errors="coerce").sum()
    finetune = pd.to_numeric(column(ok, "wall_finetune_s"), errors="coerce").sum()
    lines = [f"- Compute time, summed over trials: {_duration(pretrain + finetune)} "
             f"(pretraining {_duration(pretrain)} for {len(trained)} pretrained models, the other trials reused "
             f"one; fine-tuning {_duration(finetune)}). Trials ran in parallel, so the elapsed time is shorter."]
    started = pd.to_datetime(column(df, "started_at"), utc=True, errors="coerce").dropna()
    if not started.empty:
        lines.append(f"- First trial started {started.min():%Y-%m-%d %H:%M} UTC, "
                     f"last {started.max():%Y-%m-%d %H:%M} UTC.")
    return lines


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def failure_lines(df: pd.DataFrame) -> list[str]:
    trials = _trials(df)
    failed = trials[~trials["status"].eq("ok")]
    if failed.empty:
        return ["- Failed trials: none."]
    lines = [f"- Failed trials: **{len(failed)}** of {len(trials)} (left out of every table and figure):"]
    for error, rows in failed.groupby(column(failed, "error").map(as_text).replace("", "no error recorded")):
        seeds = ", ".join(_values(rows, "seed"))
        pruners = ", ".join(_values(rows, "pruner"))
        lines.append(f"  - {len(rows)} × `{error}` (pruner {pruners}; seeds {seeds})")
    return lines


def provenance_lines(results: Results) -> list[str]:
    df = results.frame
    trials = _trials(df)
    lines = [
        f"- Results: {', '.join(f'`{p}`' for p in results.files)} — {len(df)} rows, {len(trials)} trials"
        + (f" ({results.duplicates} duplicate rows dropped)" if results.duplicates else "") + "."
        + (f" {results.repeats} repeat run{'s' if results.repeats != 1 else ''} of a configuration and seed "
           "dropped (the most recent run of each kept): a rerun is not another seed." if results.repeats else ""),
        f"- Sweep: {_counts(column(trials, 'sweep').fillna('none recorded (single prunerlib run trials)'))}.",
        "- Methods as specified in `../shared/SPEC.md` (the paper's open choices pinned down there).",
        *settings_lines(final_ok(df)),
        f"- Versions: prunerlib {_counts(column(trials, 'prunerlib_version'))}; "
        f"torch {_counts(column(trials, 'torch_version'))}; python {_counts(column(trials, 'python_version'))}.",
        f"- Hardware: devices {_counts(column(trials, 'device'))}; hosts {_counts(column(trials, 'host'))}.",
        *wall_time_lines(df),
        *failure_lines(df),
    ]
    return lines


def spec_lines(files: Iterable[Path]) -> list[str]:
    """The spec a sweep ran, when the sweep folder keeps it beside its results.parquet: it is
    the sweep's own record (not Ray's state), and says what was asked for, not only what ran."""
    lines = []
    for spec in dict.fromkeys(path.parent / "spec.yaml" for path in files):
        if spec.is_file():
            lines += ["", f"Sweep spec as run (`{spec}`):", "", "```yaml", spec.read_text().rstrip(), "```"]
    return lines


# --------------------------------------------------------------------------- the report
METHOD_NOTES = (
    "Tables use each successful trial's final cycle (`final` and `status == ok`). Mean ± sample standard deviation "
    "(n − 1 in the denominator) over trials; n is the number of trials (seeds).",
    "Paper cells use the paper's settings: distinctiveness at 15° (no merging), threshold at 1.0 × mean |w| of the "
    "hidden layer's incoming weights, filter ranking by L1 norm. Other settings appear in the all-settings table.",
    "Controls: a method trial pairs with the `none` and `random` trials of the same data (dataset, attributes, "
    "data_seed), seed, network and pretraining settings — so they share one pretrained model. A `none` control with "
    "the method's fine-tuning epochs is preferred; a `random` control must mirror the method's settings (`match`, "
    "cutoff / factor / filter counts).",
    "Paired difference = method − control on the same seed; 95% CI = mean ± t(0.975, n − 1) · sd / √n "
    "(Student's t, computed exactly); with one pair there is no CI.",
    "Multiple comparisons: each paired difference with two or more pairs that do not all differ by the same "
    "amount (accuracies move in steps of 1 / n_test, so ties happen) gets a two-sided paired t test "
    "(exact t distribution), and the p-values of every such comparison in the report — the honest comparison "
    "table and the all-settings table's differences against none, each comparison once — are adjusted together by "
    "Holm–Bonferroni, so all verdicts together are wrong with probability at most 5%. Verdicts use the adjusted "
    "p-value; the 95% CIs are each comparison's own.",
    "Figures share one sparsity axis across pruners: the share of all weights and biases that are zero after "
    "pruning (1 − params_nonzero / params_total). Theoretical speedup = dense FLOPs / FLOPs of the compacted, "
    "pruned network (PyTorch's FLOP counter).",
)


def _table_section(table: Table) -> list[str]:
    links = ", ".join(f"[{table.name}.{suffix}]({table.name}.{suffix})" for suffix in ("csv", "tex"))
    return [f"## {table.title}", "", to_markdown(table), f"Also as {links}.", ""]


def _figure_section(figures: Iterable[Figure]) -> list[str]:
    lines = ["## Figures", ""]
    for figure in figures:
        lines += [f"![{figure.name}]({figure.path.name})", "", f"*{figure.caption}*", ""]
    return lines


def render_report(results: Results, tables: list[Table], figures: list[Figure], skipped: list[str]) -> str:
    by_name = {t.name: t for t in tables}
    family = comparison_family(results.frame)
    claims = claim_sentences(results.frame, family)
    lines = [
        "# Pruning sweep report",
        "",
        f"Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by `python analysis/report.py` "
        "from the result rows alone. It reproduces the tables of *The Pruning Methods for feed-forward network and "
        "Convolutional Neural Network* beside the paper's published numbers, with the `none` and `random` controls "
        "the paper does not have.",
        "",
        "## Provenance",
        "",
        *provenance_lines(results),
        *spec_lines(results.files),
        "",
        "## Does pruning improve accuracy here?",
        "",
        "The paper compares fine-tuned against pretrained accuracy and reports a gain of about 3%. That gain mixes "
        "the effect of pruning with the effect of training longer; the `none` control separates them.",
        "",
        f"Each verdict below is tested with {family.words()}: a claim is supported only when its adjusted "
        "p-value is below 0.05.",
        "",
        *([f"- {claim}" for claim in claims] or ["- No method row has trials: nothing to judge."]),
        "",
    ]
    for name in TABLE_ORDER:
        if name in by_name:
            lines += _table_section(by_name[name])
    if figures:
        lines += _figure_section(figures)
    lines += ["## How the numbers are computed", "", *[f"- {note}" for note in METHOD_NOTES], ""]
    if skipped:
        lines += ["## Not produced", "", *[f"- {message}" for message in skipped], ""]
    return "\n".join(lines)


def write_report(results: Results, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    tables, table_skips = write_tables(results.frame, out_dir)
    figures, figure_skips = make_figures(results.frame, out_dir)
    for message in (*table_skips, *figure_skips):
        print(f"skipped: {message}", file=sys.stderr)
    path = out_dir / "report.md"
    path.write_text(render_report(results, tables, figures, [*table_skips, *figure_skips]))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tables, figures and report.md from result Parquet files.")
    parser.add_argument("results", nargs="+", type=Path, help="results.parquet file(s) of one or more sweeps")
    parser.add_argument("--out", type=Path, required=True, help="folder for report.md, tables and figures")
    args = parser.parse_args(argv)
    print(write_report(load_results(args.results), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
