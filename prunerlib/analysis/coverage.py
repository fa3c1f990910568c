"""What a table's spread over seeds covers (the training seed, or the seed and the data split),
and the test-sample noise it leaves out."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from prunerlib.analysis.rows import column
from prunerlib.analysis.stats import wilson

TEST_SAMPLE = "Test sample, 95% (Wilson)"


SEED_ONLY, SEED_AND_SPLIT = "training seed only", "training seed and data split"


def covers(rows: pd.DataFrame) -> str | None:
    """What a spread over these trials covers: seeds vary training only unless each seed also
    draws its own data split (`data_seed` varies); None when the rows do not say."""
    if "data_seed" not in rows.columns or rows["data_seed"].isna().all():
        return None
    return SEED_AND_SPLIT if rows["data_seed"].nunique() > 1 else SEED_ONLY


def n_test(rows: pd.DataFrame) -> int | None:
    """Test examples behind these trials' accuracies (the fewest, should they differ); None when unknown."""
    counts = pd.to_numeric(column(rows, "n_test"), errors="coerce").dropna()
    return int(counts.min()) if len(counts) else None


def coverage_note(groups: Iterable[pd.DataFrame], subject: str, accuracy: str | None = "acc_finetuned",
                  in_column: bool = False, paired: bool = False) -> str:
    """One line per table: what its `subject` ('± values', 'CIs') cover, and for accuracies on a
    fixed split the size of the test-sample noise they leave out (a Wilson interval at each
    group's mean accuracy), or that the table's test-sample column gives it."""
    groups = [g for g in groups if len(g) > 1]  # one trial has no spread to speak of
    kinds = {covers(g) for g in groups}
    if not groups:
        return f"There are no {subject} to cover anything: no row has two or more seeds."
    if None in kinds:
        return f"What the {subject} cover is unknown: the rows have no data_seed."
    if kinds == {SEED_AND_SPLIT}:
        return (f"The {subject} cover the {SEED_AND_SPLIT}: data_seed varies with the seed"
                + (", so each seed is tested on its own test sample and test-sample noise is in them." if accuracy
                   else "."))
    mixed = f" ({SEED_AND_SPLIT} where data_seed varies within a row)" if SEED_AND_SPLIT in kinds else ""
    text = f"The {subject} cover the {SEED_ONLY}{mixed}: data_seed is fixed"
    if accuracy is None:
        return text + "."
    text += ", so every seed is tested on the same examples and test-sample noise is not in them"
    fixed = [g for g in groups if covers(g) == SEED_ONLY]
    sizes = {n_test(g) for g in fixed}
    if None in sizes:
        return text + "; its size is unknown: n_test unknown (the rows do not record it)."
    if in_column:
        return text + f"; the '{TEST_SAMPLE}' column gives it (the interval our mean accuracy has from its n_test " \
                      "test examples alone)."
    halves = sorted(50 * (high - low) for g in fixed
                    for low, high in [wilson(float(pd.to_numeric(g[accuracy], errors="coerce").mean()), n_test(g))])
    spread = f"±{halves[0]:.1f}" if f"{halves[0]:.1f}" == f"{halves[-1]:.1f}" else \
        f"±{halves[0]:.1f} to ±{halves[-1]:.1f}"
    paired_words = ("; a paired difference's own needs per-example predictions, which the rows do not carry"
                    if paired else "")
    return (text + f" (one accuracy's 95% Wilson interval at n_test = {', '.join(map(str, sorted(sizes)))} is "
            f"{spread} points{paired_words}).")
