"""The table set, as Markdown, CSV and LaTeX."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from prunerlib.analysis.comparison import all_settings_table, comparison_family, comparison_table
from prunerlib.analysis.rows import MissingData
from prunerlib.analysis.speed import speed_table
from prunerlib.analysis.tables import Table, table1, table2, table3


TABLE_BUILDERS: tuple[Callable[[pd.DataFrame], Table], ...] = (table1, table2, table3, comparison_table,
                                                                 all_settings_table, speed_table)


def build_tables(df: pd.DataFrame) -> tuple[list[Table], list[str]]:
    """Every table that can be built, and one message per table that cannot."""
    tables, skipped = [], []
    family = comparison_family(df)  # one family for every table's p-values
    for builder in TABLE_BUILDERS:
        try:
            tables.append(builder(df, family) if builder in (comparison_table, all_settings_table) else builder(df))
        except MissingData as exc:
            skipped.append(str(exc))
    return tables, skipped


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(table: Table) -> str:
    header = list(table.display.columns)
    lines = ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in table.display.itertuples(index=False)]
    if table.notes:
        lines += [""] + [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_UNICODE = {"±": r"$\pm$", "−": r"$-$", "°": r"$^\circ$", "×": r"$\times$", "Δ": r"$\Delta$",
                  "—": "---", "–": "--", "√": r"$\surd$", "·": r"$\cdot$"}


def latex_escape(text: Any) -> str:
    escaped = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    return "".join(_LATEX_UNICODE.get(ch, ch) for ch in escaped)


def to_latex(table: Table) -> str:
    """A booktabs table scaled to the text width (needs \\usepackage{booktabs,graphicx});
    notes go under it in small type."""
    columns = list(table.display.columns)
    lines = [r"% needs \usepackage{booktabs,graphicx}", r"\begin{table}[ht]", r"\centering", r"\small",
             rf"\caption{{{latex_escape(table.title)}}}", rf"\label{{tab:{table.name}}}",
             r"\resizebox{\linewidth}{!}{%", rf"\begin{{tabular}}{{{'l' * len(columns)}}}", r"\toprule",
             " & ".join(latex_escape(c) for c in columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(v) for v in row) + r" \\" for row in table.display.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}}"]
    if table.notes:
        lines.append(r"\par\smallskip\footnotesize " + r" \par ".join(latex_escape(n) for n in table.notes))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_table(table: Table, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {suffix: out_dir / f"{table.name}.{suffix}" for suffix in ("md", "csv", "tex")}
    paths["md"].write_text(f"# {table.title}\n\n{to_markdown(table)}")
    table.data.to_csv(paths["csv"], index=False)
    paths["tex"].write_text(to_latex(table))
    return list(paths.values())


def write_tables(df: pd.DataFrame, out_dir: Path) -> tuple[list[Table], list[str]]:
    """Every table that can be built, written; and one message per table that cannot."""
    tables, skipped = build_tables(df)
    for table in tables:
        write_table(table, out_dir)
    return tables, skipped
