"""Which result columns tell settings apart, pair a method with its controls, and each table needs."""

from __future__ import annotations


PRUNING_COLUMNS = ("angle_cutoff", "merge", "remove_constant", "threshold_factor", "threshold_stat",
                   "threshold_layers", "filter_criterion", "filters_pruned", "filters_frac")
# What a random control copies from the method it mirrors (SPEC §4.4); its own filter
# criterion is 'random', so the criterion is not among them. It must also run the same
# schedule, or it would not remove the same amount.
MIRRORED_COLUMNS = (*(c for c in PRUNING_COLUMNS if c != "filter_criterion"), "cycles", "max_acc_drop",
                    "epochs_finetune")
TRAINING_COLUMNS = ("model", "hidden", "conv_channels", "activation", "epochs_pretrain", "pretrain_stop",
                    "patience", "min_delta", "batch_size", "lr", "optimizer", "momentum", "weight_decay")
# A control pairs with a method trial when it saw the same data, network and pretraining: the
# difference then isolates pruning. Fine-tuning epochs and cycles are left out on purpose: a none
# control may run them differently to reach the same total (checked by `finetune_budget`).
PAIR_COLUMNS = ("dataset", "attributes", "data_seed", "seed", *TRAINING_COLUMNS)
SETTING_COLUMNS = (*PRUNING_COLUMNS, *TRAINING_COLUMNS, "cycles", "max_acc_drop", "epochs_finetune")

TABLE1_COLUMNS = ("attributes", "acc_pretrain", "angle_cutoff", "threshold_factor", "threshold_stat")
TABLE2_COLUMNS = ("attributes", "units_removed_frac", "weights_removed_frac", "angle_cutoff",
                  "threshold_factor", "threshold_stat")
TABLE3_COLUMNS = ("units_removed_frac", "weights_removed_frac", "filters_removed_frac", "angle_cutoff",
                  "threshold_factor", "threshold_stat", "filter_criterion", "filters_pruned", "filters_frac")
