"""`report.md` for one or more sweeps' result files: provenance, verdicts, every table and figure."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterable
from pathlib import Path

from prunerlib.analysis.comparison import claim_sentences, comparison_family
from prunerlib.analysis.figures import Figure, make_figures
from prunerlib.analysis.provenance import provenance_lines, spec_lines
from prunerlib.analysis.render import to_markdown, write_tables
from prunerlib.analysis.results import Results
from prunerlib.analysis.sensitivity import sensitivity_section
from prunerlib.analysis.speed import NAME as SPEED_TABLE
from prunerlib.analysis.speed import speed_section
from prunerlib.analysis.tables import Table

TABLE_ORDER = ("table1", "table2", "table3", "comparison", "all_settings", SPEED_TABLE)


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
    "Measured speedup = median latency of the dense network / that of the compacted network the trial saved "
    "(`prunerlib.latency`: inference mode, warm-up, the median of ~0.2 s of forward passes, one CPU thread or CUDA "
    "events), at the trial's timing batch size and at batch 1. Zeroed weights lower the FLOPs but not the compacted "
    "network's shapes; only removed units and filters do.",
)


def _table_section(table: Table) -> list[str]:
    links = ", ".join(f"[{table.name}.{suffix}]({table.name}.{suffix})" for suffix in ("csv", "tex"))
    return [f"## {table.title}", "", to_markdown(table), f"Also as {links}.", ""]


def _figure_section(figures: Iterable[Figure]) -> list[str]:
    lines = ["## Figures", ""]
    for figure in figures:
        lines += [f"![{figure.name}]({figure.path.name})", "", f"*{figure.caption}*", ""]
    return lines


def render_report(results: Results, tables: list[Table], figures: list[Figure], skipped: list[str],
                  sensitivity: Iterable[str] = ()) -> str:
    by_name = {t.name: t for t in tables}
    family = comparison_family(results.frame)
    claims = claim_sentences(results.frame, family)
    lines = [
        "# Pruning sweep report",
        "",
        f"Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by `prunerlib report` "
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
        if name == SPEED_TABLE and name in by_name:
            lines += speed_section(by_name[name])
    if figures:
        lines += _figure_section(figures)
    lines += [*sensitivity, "## How the numbers are computed", "", *[f"- {note}" for note in METHOD_NOTES], ""]
    if skipped:
        lines += ["## Not produced", "", *[f"- {message}" for message in skipped], ""]
    return "\n".join(lines)


def write_report(results: Results, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.md"
    sensitivity = sensitivity_section(results.scans, out_dir) if results.scans else []
    if results.frame.empty and sensitivity:  # scans alone: no trial tables to make
        path.write_text("\n".join([f"# Sensitivity report\n\nGenerated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} "
                                   "UTC by `prunerlib report`.\n", *sensitivity]))
        return path
    tables, table_skips = write_tables(results.frame, out_dir)
    figures, figure_skips = make_figures(results.frame, out_dir)
    for message in (*table_skips, *figure_skips):
        print(f"skipped: {message}", file=sys.stderr)
    path.write_text(render_report(results, tables, figures, [*table_skips, *figure_skips], sensitivity))
    return path
