"""`prunerlib` command line: `run` one trial, `sweep` many on Ray Tune, `data waveform` to write
a UCI-format file.

User mistakes (unknown flag, bad value, unusable data) print one line and exit 2; a trial
that diverges is a result (a `failed` row), not a crash.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

import yaml

from prunerlib.errors import ConfigError, PrunerlibError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage block
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


# Flags that map one-to-one onto TrialConfig fields: (flag, type, help).
_TRIAL_FLAGS: list[tuple[str, Any, str]] = [
    ("dataset", str, "waveform | catsdogs"),
    ("data", str, "UCI waveform file, or a Dogs vs. Cats folder (default: generate Waveform data)"),
    ("attributes", int, "Waveform attributes: 21 or 40"),
    ("model", str, "ffn | cnn (default: the dataset's)"),
    ("hidden", int, "hidden units"),
    ("pruner", str, "distinctiveness | threshold | filters | none | random"),
    ("match", str, "for --pruner random: the pruner it mirrors"),
    ("angle-cutoff", float, "distinctiveness cutoff in degrees, in (0, 90)"),
    ("merge", str, "distinctiveness: none | outgoing"),
    ("threshold-factor", float, "mask |w| < factor × stat of the live weights"),
    ("threshold-stat", str, "mean_abs (mean of |w|, the paper) | std (of the signed weights, Han et al.)"),
    ("threshold-layers", str, "hidden | all_linear | a layer name"),
    ("filter-criterion", str, "l1 | mean_activation | apoz | random"),
    ("filters-pruned", int, "conv filters removed per layer and cycle"),
    ("filters-frac", float, "share of each conv layer's filters removed per cycle"),
    ("cycles", int, "prune / fine-tune cycles"),
    ("max-acc-drop", float, "stop cycling when validation accuracy falls this far below pretrained"),
    ("seed", int, "model seed: initialisation, data order, random choices"),
    ("data-seed", int, "dataset seed: generation, split and subset"),
    ("epochs-pretrain", int, "most pretraining epochs"),
    ("epochs-finetune", int, "fine-tuning epochs per cycle"),
    ("batch-size", int, "mini-batch size"),
    ("lr", float, "learning rate"),
    ("optimizer", str, "adam | sgd"),
    ("device", str, "auto | cpu | cuda | cuda:N"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="prunerlib", description="Pretrain → prune → fine-tune trials for pruning research.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run one trial and append its rows to a Parquet file")
    run.add_argument("--config", type=Path, help="YAML file of trial settings (flags override it)")
    for flag, kind, text in _TRIAL_FLAGS:
        run.add_argument(f"--{flag}", type=kind, help=text)
    run.add_argument("--remove-constant", action="store_true", default=None,
                     help="distinctiveness: remove units constant over the data")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="any trial setting, value in YAML syntax (repeatable; overrides everything)")
    run.add_argument("--out", type=Path, default=Path("runs/results.parquet"), help="Parquet file rows are appended to")
    run.add_argument("--workdir", type=Path, default=Path("runs"), help="where pretrained models are kept and reused")
    run.add_argument("--quiet", action="store_true", help="no progress bars or summary")

    sweep = commands.add_parser("sweep", help="run a sweep spec on Ray Tune (embedded local Ray by default)")
    sweep.add_argument("spec", type=Path, help="sweep spec (YAML), e.g. sweeps/quick.yaml")
    sweep.add_argument("--storage", help="folder the sweep folder goes in (default: runs; on a cluster, a folder "
                                         "every node shares)")
    sweep.add_argument("--address", help="join a running Ray cluster: auto, or HOST:PORT (default: embedded local Ray)")
    sweep.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same spec")
    sweep.add_argument("--retry-failed", action="store_true",
                       help="with --resume: run again the configurations whose rows say failed or error")
    sweep.add_argument("--dry-run", action="store_true",
                       help="print the trials and the resource plan, run nothing (with --address: on that cluster, "
                            "with each GPU node's trial slots and population sizes)")
    sweep.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a fixed trial setting of the spec, value in YAML syntax (repeatable)")

    data = commands.add_parser("data", help="write data files")
    kinds = data.add_subparsers(dest="kind", required=True, parser_class=_Parser)
    wave = kinds.add_parser("waveform", help="generate Waveform data in the UCI file format")
    wave.add_argument("--attributes", type=int, choices=(21, 40), default=40)
    wave.add_argument("--n", type=int, default=5000)
    wave.add_argument("--seed", type=int, default=0)
    wave.add_argument("--out", type=Path, required=True)
    return parser


def trial_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Merge config file < flags < --set into one settings dict."""
    settings: dict[str, Any] = {}
    if args.config:
        try:
            loaded = yaml.safe_load(args.config.read_text())
        except OSError as exc:
            raise ConfigError(f"config: cannot read {args.config}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config: {args.config} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config: {args.config} must hold a mapping of settings")
        settings.update(loaded)
    for flag, _, _ in _TRIAL_FLAGS + [("remove-constant", bool, "")]:
        value = getattr(args, flag.replace("-", "_"))
        if value is not None:
            settings[flag.replace("-", "_")] = value
    settings.update(set_overrides(args.set))
    return settings


def set_overrides(items: list[str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set: expected KEY=VALUE, got {item!r}")
        key = key.strip().replace("-", "_")
        try:
            settings[key] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:  # also an unsafe tag (!!python/...), which safe_load refuses
            problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
            raise ConfigError(f"--set {key}: not valid YAML: {problem} (got {raw!r})") from None
    return settings


def _run(args: argparse.Namespace) -> int:
    from prunerlib.config import TrialConfig
    from prunerlib.pipeline import Workdirs, run_trial
    from prunerlib.records import append_parquet
    from prunerlib.summary import trial_summary

    cfg = TrialConfig.from_dict(trial_settings(args))
    if cfg.data and not Path(cfg.data).exists():
        raise ConfigError(f"data: {cfg.data} does not exist")
    check_out(args.out)
    rows = run_trial(cfg, Workdirs(pretrained=args.workdir / "pretrained"), progress=not args.quiet)
    try:
        out = append_parquet(args.out, rows)
    except OSError as exc:  # the file system failed after the check: keep the rows anyway
        print(f"prunerlib run: error: cannot write {args.out} ({exc.strerror or exc}); the trial's rows are saved "
              f"in {_rescue(args.out, rows)}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(trial_summary(rows))
    print(f"{len(rows)} row(s) appended to {out}")
    return 0 if rows[-1]["status"] == "ok" else 1


def check_out(out: Path) -> None:
    """Refuse, before any training, an --out the rows could not be appended to."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from prunerlib.records import conform

    target = out.resolve()  # a symlink is written through
    if target.is_dir():
        raise ConfigError(f"--out: {out} is a folder; give a .parquet file path")
    if target.exists():
        try:
            conform(pq.read_table(target))  # what appending will do
        except (pa.ArrowException, ValueError, OSError) as exc:
            raise ConfigError(f"--out: {out} is not a result file of this prunerlib ({str(exc).splitlines()[0][:100]}); "
                              f"give another --out") from None
    folder = next(p for p in target.parents if p.exists()) if not target.parent.exists() else target.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"--out: cannot write in {folder} (read-only or not yours); give another --out")


def _rescue(out: Path, rows: list[dict[str, Any]]) -> Path:
    import uuid

    import pyarrow.parquet as pq

    from prunerlib.records import to_table

    name = f"{out.name}.rescue-{uuid.uuid4().hex[:8]}.parquet"
    for path in (out.resolve().with_name(name), Path.cwd() / name):
        try:
            pq.write_table(to_table(rows), path)
            return path
        except OSError:
            continue
    raise OSError(f"cannot save the rows beside {out} nor in {Path.cwd()}")


def _sweep(args: argparse.Namespace) -> int:
    from prunerlib.sweep.plan import plan_text
    from prunerlib.sweep.spec import SpecError, load_spec

    spec = load_spec(args.spec, set_overrides(args.set))
    remote = args.address not in (None, "local")
    if args.dry_run and remote:  # the cluster's resources, and what each GPU node would run
        from prunerlib.sweep.cluster import cluster_plan

        print(cluster_plan(spec, args.address))
        return 0
    if args.dry_run:
        print(plan_text(spec))
        return 0
    if remote and not args.storage:
        raise SpecError("storage: a sweep on a cluster needs --storage, a folder every node shares "
                        "(an NFS mount, say) at the same path")
    from prunerlib.sweep.runner import run_sweep

    again = ["prunerlib", "sweep", str(args.spec), "--storage", args.storage or "runs", "--resume",
             *(["--address", args.address] if remote else []), *(f"--set={item}" for item in args.set)]
    return run_sweep(spec, args.storage or "runs", address=args.address if remote else None, resume=args.resume,
                     retry_failed=args.retry_failed, resume_command=shlex.join(again))


def _data(args: argparse.Namespace) -> int:
    from prunerlib import waveform

    x, y = waveform.generate(args.n, args.attributes, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    waveform.write_uci(args.out, x, y)
    print(f"wrote {args.n} instances with {args.attributes} attributes to {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return {"run": _run, "sweep": _sweep, "data": _data}[args.command](args)
    except PrunerlibError as exc:
        print(f"prunerlib {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # output piped into `head`: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
