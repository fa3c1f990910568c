"""`prunerlib sensitivity`: the one-layer-at-a-time scan (`prunerlib.sensitivity`) on the
command line, with `prunerlib run`'s data, model and pretraining flags.

Nothing heavy is imported at module level: `prunerlib.cli` imports this module for every command.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from prunerlib.errors import ConfigError


def add_parser(subcommands: Any) -> argparse.ArgumentParser:
    from prunerlib.cli import add_setting_flags

    parser = subcommands.add_parser(
        "sensitivity", help="prune one layer at a time by each criterion, without fine-tuning",
        description="From the shared pretrained model, prune each conv layer's filters, the hidden layer's units "
                    "and its incoming weights alone, by each criterion at each fraction, and record validation and "
                    "test accuracy (DIR/sensitivity.parquet) and how far the criteria agree (DIR/agreement.parquet). "
                    "A rerun of a seed replaces that seed's rows.")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the two Parquet files")
    parser.add_argument("--fractions", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", metavar="F,F,...",
                        help="shares of each layer removed, each in (0, 1)")
    parser.add_argument("--criteria", default=None, metavar="NAME,...",
                        help="l1, mean_activation, apoz (filters and units), magnitude (weights), random (all) "
                             "(default: all of them)")
    parser.add_argument("--workdir", type=Path, default=Path("runs"),
                        help="where pretrained models are kept and reused (WORKDIR/pretrained), as for run")
    parser.add_argument("--config", type=Path, help="YAML file of trial settings (flags override it)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any data, model or pretraining setting, value in YAML syntax (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_setting_flags(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from prunerlib.cli import trial_settings
    from prunerlib.config import TrialConfig
    from prunerlib.sensitivity import AGREEMENT_FILE, CRITERIA, SCAN_FILE, check_request, ignored, scan

    fractions = _numbers(args.fractions)
    criteria = list(CRITERIA) if args.criteria is None else [c.strip() for c in args.criteria.split(",") if c.strip()]
    check_request(fractions, criteria)
    settings = trial_settings(args)
    for name in settings:
        if ignored(name):
            raise ConfigError(f"--{name.replace('_', '-')}: a sensitivity scan prunes one layer at a time by "
                              f"--criteria and --fractions, without fine-tuning; leave {name} out")
    cfg = TrialConfig.from_dict(settings)
    if cfg.data and not Path(cfg.data).exists():
        raise ConfigError(f"data: {cfg.data} does not exist")
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out: {args.out} is a file; give a folder (the scan writes {SCAN_FILE} in it)")
    sens, agree = scan(cfg, args.out, fractions=fractions, criteria=criteria, workdir=args.workdir,
                       progress=not args.quiet)
    layers = ", ".join(dict.fromkeys(f"{layer} {what}" for layer, what in zip(sens["layer"], sens["what"])))
    print(f"{len(sens)} row(s) of seed {cfg.seed} ({layers}) in {args.out / SCAN_FILE}, "
          f"{len(agree)} in {args.out / AGREEMENT_FILE} ({sens['wall_s'].iloc[0]:.1f} s)")
    return 0


def _numbers(text: str) -> list[float]:
    try:
        return [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise ConfigError(f"--fractions: expected shares such as 0.1,0.5,0.9, got {text!r}") from None
