"""The paper's Tables 1–3 beside ours, the honest comparison and every setting, as Markdown,
CSV and LaTeX.

    python analysis/paper_tables.py RESULTS [RESULTS ...] --out DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the `analysis` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from analysis.results import load_results, run_cli  # noqa: E402
from analysis.tables import Table, build_tables, to_latex, to_markdown  # noqa: E402


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The paper's tables beside ours, from result Parquet files.")
    parser.add_argument("results", nargs="+", type=Path, help="results.parquet file(s) of one or more sweeps")
    parser.add_argument("--out", type=Path, required=True, help="folder for the .md / .csv / .tex files")
    args = parser.parse_args(argv)
    tables, skipped = write_tables(load_results(args.results).frame, args.out)
    for message in skipped:
        print(f"skipped: {message}", file=sys.stderr)
    for table in tables:
        print(args.out / f"{table.name}.md")
    return 0 if tables else 1


if __name__ == "__main__":
    sys.exit(run_cli(main))
