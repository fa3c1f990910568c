"""The one screen a sweep ends with: the best setting per pruner, and what failed.

"Best" is by validation accuracy: the test accuracy printed beside it is only reported, so it
stays an unbiased estimate for the setting chosen (SPEC §5).
"""

from __future__ import annotations

import pandas as pd

from prunerlib import registry
from prunerlib.sweep.spec import SweepSpec


def setting_columns(frame: pd.DataFrame) -> list[str]:
    """The columns that tell one configuration from another, seed aside: the data, the pruner
    and every pruner's settings (a plugin's too, when its rows have them)."""
    return [c for c in ("dataset", "attributes", "pruner", "match", *registry.settings()) if c in frame.columns]


def sweep_summary(frame: pd.DataFrame, spec: SweepSpec) -> str:
    finals = frame[frame["final"]]
    ok = finals[finals["status"] == "ok"]
    # failed: the trial's own result (diverged, bad data); error: a bug inside the trial.
    errored = finals[finals["status"] == "error"]
    failed = finals[(finals["status"] != "ok") & (finals["status"] != "error")]
    lines = [f"sweep {spec.name}: {len(finals)} configuration(s) finished, {len(ok)} ok, {len(failed)} failed, "
             f"{len(errored)} error"]
    if len(ok):
        lines.append("best setting per pruner, chosen on validation accuracy (mean over seeds of the final "
                     "fine-tuned accuracy; test reported beside it):")
        lines.append(f"  {'pruner':<24}{'setting':<34}{'validation':>20}{'test':>20}{'removed':>20}"
                     f"{'seeds':>7}")
        for pruner, rows in ok.groupby("pruner", sort=True):
            groups = rows.groupby([c for c in setting_columns(rows) if c != "pruner"], dropna=False)
            best_key = groups["val_acc_finetuned"].mean().idxmax()
            best = groups.get_group(best_key if isinstance(best_key, tuple) else (best_key,))
            row = best.iloc[0]
            method = registry.PRUNERS.get(row["match"] if pruner == "random" else pruner)
            removed_col = (method and method.removes) or "weights_removed_frac"
            removed = best[removed_col].mean()
            label = pruner if pruner != "random" else f"random~{row['match']}"
            lines.append(
                f"  {label:<24}{_setting(row):<34}{'val ' + _pct(best['val_acc_finetuned']):>20}"
                f"{'test ' + _pct(best['acc_finetuned']):>20}"
                f"{removed_col.split('_')[0] + ' ' + ('-' if pd.isna(removed) else f'{100 * removed:.1f}%'):>20}"
                f"{len(best):>7}")
    for status, rows in (("error", errored), ("failed", failed)):
        for _, row in rows.head(5).iterrows():
            last = str(row["error"]).strip().splitlines()[-1]  # an error row's traceback ends in its message
            lines.append(f"  {status} {row['trial_id']} ({row['pruner']}, seed {row['seed']}): {last}")
        if len(rows) > 5:
            lines.append(f"  ... and {len(rows) - 5} more {status} (status == '{status}' in the results)")
    return "\n".join(lines)


def _setting(row: pd.Series) -> str:
    parts = []
    labels = {name: s.label for name, s in registry.settings().items() if s.label}
    for column, short in (("attributes", "attrs"), *labels.items()):
        if column in row and not pd.isna(row[column]):
            value = row[column]
            shown = int(value) if column == "attributes" else f"{value:.4g}" if isinstance(value, float) else value
            parts.append(f"{short}={shown}")
    return " ".join(parts) or "-"


def _pct(values: pd.Series) -> str:
    mean, std = values.mean(), values.std()
    return f"{100 * mean:.2f}%" + ("" if pd.isna(std) else f" ± {100 * std:.2f}")
