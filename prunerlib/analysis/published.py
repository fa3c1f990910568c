"""The paper's published numbers (SPEC §8) and the settings its tables were run at."""

from __future__ import annotations

from typing import Any


# --------------------------------------------------------------------------- published numbers
# SPEC §7, in percent; the paper reports one run per cell. Key: (table, attributes, quantity, method).
PUBLISHED: dict[tuple[str, int | None, str, str], float] = {
    ("table1", 40, "pretrain", "distinctiveness"): 82.70,
    ("table1", 40, "pretrain", "threshold"): 81.33,
    ("table1", 40, "pretrain", "decision_tree"): 80.5,
    ("table1", 40, "pretrain", "logic_classifier"): 78.93,
    ("table1", 40, "finetune", "distinctiveness"): 85.83,
    ("table1", 40, "finetune", "threshold"): 85.00,
    ("table1", 21, "pretrain", "distinctiveness"): 82.10,
    ("table1", 21, "pretrain", "threshold"): 83.02,
    ("table1", 21, "finetune", "distinctiveness"): 84.26,
    ("table1", 21, "finetune", "threshold"): 85.98,
    ("table2", 40, "removed", "distinctiveness"): 16.00,
    ("table2", 40, "removed", "threshold"): 45.00,
    ("table2", 21, "removed", "distinctiveness"): 13.41,
    ("table2", 21, "removed", "threshold"): 49.43,
    ("table3", None, "accuracy", "distinctiveness"): 65.00,
    ("table3", None, "accuracy", "threshold"): 61.07,
    ("table3", None, "accuracy", "vgg16"): 85.76,
    ("table3", None, "linear_removed", "distinctiveness"): 23.51,
    ("table3", None, "linear_removed", "threshold"): 49.43,
    ("table3", None, "filters_removed", "distinctiveness"): 43.12,
    ("table3", None, "filters_removed", "threshold"): 46.57,
}


def published(table: str, attributes: int | None, quantity: str, method: str) -> float | None:
    return PUBLISHED.get((table, attributes, quantity, method))


def published_gain(attributes: int, method: str) -> float | None:
    """The paper's 'pruning improves accuracy': fine-tuned minus pretrained, Table 1."""
    pre = published("table1", attributes, "pretrain", method)
    fine = published("table1", attributes, "finetune", method)
    return None if pre is None or fine is None else round(fine - pre, 2)


PAPER_SETTINGS: dict[str, dict[str, Any]] = {
    "distinctiveness": {"angle_cutoff": 15.0, "merge": "none", "remove_constant": False},
    "threshold": {"threshold_factor": 1.0, "threshold_stat": "mean_abs", "threshold_layers": "hidden"},
    "filters": {"filter_criterion": "l1"},
}
