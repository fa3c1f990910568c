"""The analysis on the command line: `prunerlib report`, and the entry points for the tables
alone and the figures alone (`analysis/paper_tables.py`, `analysis/pareto.py`).

Nothing heavy is imported here: `prunerlib.cli` imports this module for every command, and
pandas and matplotlib are only needed by a report.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prunerlib.errors import PrunerlibError

EXIT_USAGE = 2


def _arguments(parser: argparse.ArgumentParser, out: str) -> argparse.ArgumentParser:
    parser.add_argument("results", nargs="+", type=Path,
                        help="result Parquet files, or sweep folders (a running sweep's trials/ folder too)")
    parser.add_argument("--out", type=Path, required=True, help=out)
    return parser


def add_report_parser(subcommands: Any) -> argparse.ArgumentParser:
    """`prunerlib report RESULTS... --out DIR`, added to the CLI's subcommands."""
    parser = subcommands.add_parser("report", help="tables, figures and report.md from result files",
                                    description="Tables, figures and report.md from result Parquet files or sweep folders.")
    parser.add_argument("--plugin", action="append", default=[], metavar="PATH.py",
                        help="a pruner file whose rows the results hold, for its labels (repeatable)")
    return _arguments(parser, "folder for report.md, tables and figures")


@contextmanager
def _writing() -> Iterator[None]:
    """An output folder that cannot be written is the user's to fix: one line, not a traceback."""
    from prunerlib.analysis.results import ResultsError

    try:
        yield
    except OSError as exc:
        raise ResultsError(f"cannot write {exc.filename}: {exc.strerror or exc}") from None


def run_report(args: argparse.Namespace) -> int:
    """Write the report and print its path (a ResultsError is the user's: the CLI prints it)."""
    from prunerlib.analysis.report import write_report
    from prunerlib.analysis.results import load_results

    results = load_results(args.results)
    with _writing():
        print(write_report(results, args.out))
    return 0


def run_tables(args: argparse.Namespace) -> int:
    from prunerlib.analysis.render import write_tables

    return _write_each(args, write_tables, lambda table: args.out / f"{table.name}.md")


def run_figures(args: argparse.Namespace) -> int:
    from prunerlib.analysis.figures import make_figures

    return _write_each(args, make_figures, lambda figure: figure.path)


def _write_each(args: argparse.Namespace, write: Callable[[Any, Path], tuple[list[Any], list[str]]],
                path_of: Callable[[Any], Path]) -> int:
    """Write what `write` makes of the results, say what it skipped and where each one went;
    exit 1 when it could make none."""
    from prunerlib.analysis.results import load_results

    frame = load_results(args.results).frame
    with _writing():
        made, skipped = write(frame, args.out)
    for message in skipped:
        print(f"skipped: {message}", file=sys.stderr)
    for item in made:
        print(path_of(item))
    return 0 if made else 1


def _main(run: Callable[[argparse.Namespace], int], description: str, out: str,
          argv: list[str] | None) -> int:
    args = _arguments(argparse.ArgumentParser(description=description), out).parse_args(argv)
    try:
        return run(args)
    except PrunerlibError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def report_main(argv: list[str] | None = None) -> int:
    return _main(run_report, "Tables, figures and report.md from result Parquet files or sweep folders.",
                 "folder for report.md, tables and figures", argv)


def tables_main(argv: list[str] | None = None) -> int:
    return _main(run_tables, "The paper's tables beside ours, from result Parquet files.",
                 "folder for the .md / .csv / .tex files", argv)


def figures_main(argv: list[str] | None = None) -> int:
    return _main(run_figures, "Accuracy / sparsity / speedup figures from result Parquet files.",
                 "folder for the PNG files", argv)
