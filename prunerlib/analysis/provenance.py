"""The report's provenance: what ran (files, sweeps, settings, versions, hardware, compute time,
failures) and the spec a sweep kept beside its results."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from prunerlib.analysis.columns import setting_columns
from prunerlib.analysis.labels import DATASET_NAMES
from prunerlib.analysis.results import Results
from prunerlib.analysis.rows import as_text, column, final_ok


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
        for name in ("attributes", "data_seed", *setting_columns(rows)):
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
    """The spec a sweep ran, when its sweep folder keeps it (beside results.parquet and
    trials/): it is the sweep's own record (not Ray's state), and says what was asked for, not
    only what ran."""
    lines = []
    for spec in dict.fromkeys(map(_spec_file, files)):
        if spec.is_file():
            lines += ["", f"Sweep spec as run (`{spec}`):", "", "```yaml", spec.read_text().rstrip(), "```"]
    return lines


def _spec_file(path: Path) -> Path:
    """Where the sweep folder that `path` (results.parquet, the folder, or its trials/) belongs to keeps its spec."""
    folder = path if path.is_dir() else path.parent
    return folder.parent / "spec.yaml" if folder.name == "trials" else folder / "spec.yaml"
