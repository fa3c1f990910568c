"""A compact per-stage text summary of one trial's rows, for the end of `prunerlib run`."""

from __future__ import annotations

from typing import Any


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:6.2f}%"


def trial_summary(rows: list[dict[str, Any]]) -> str:
    first = rows[0]
    head = f"trial {first['trial_id']}  {first['dataset']}/{first['model']}  pruner={first['pruner']}  seed={first['seed']}"
    if first["status"] != "ok":
        return f"{head}\nFAILED: {first['error']}"
    reused = " (reused)" if first["pretrain_reused"] else ""
    lines = [
        head,
        f"{'stage':<14}{'test acc':>9}{'train acc':>10}{'units':>9}{'weights':>9}{'filters':>9}{'speedup':>9}{'wall':>9}",
        f"{'pretrain':<14}{_pct(first['acc_pretrain']):>9}{_pct(first['train_acc_pretrain']):>10}"
        f"{'':>36}{first['wall_pretrain_s']:>8.1f}s  {first['pretrain_epochs_run']} epochs{reused}",
    ]
    for row in rows:
        removed = (f"{_pct(row['units_removed_frac']):>9}{_pct(row['weights_removed_frac']):>9}"
                   f"{_pct(row['filters_removed_frac']):>9}{row['theoretical_speedup']:>8.2f}x")
        lines.append(f"{'pruned ' + str(row['cycle']):<14}{_pct(row['acc_pruned']):>9}{'':>10}{removed}")
        lines.append(f"{'fine-tuned ' + str(row['cycle']):<14}{_pct(row['acc_finetuned']):>9}"
                     f"{_pct(row['train_acc_finetuned']):>10}{'':>36}{row['wall_finetune_s']:>8.1f}s")
    return "\n".join(lines)
