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
from typing import Any, NoReturn, Sequence, get_args

import yaml

from prunerlib.errors import ConfigError, PrunerlibError
from prunerlib.saved import SaveModels

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any):
        # No prefix matching: `--devic cpu` must be an error, not --device, and a flag a plugin
        # adds later must not change what an abbreviation meant.
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:  # one line, not argparse's usage block
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


class _Help(argparse.HelpFormatter):
    """--help with each option's default, where it has one worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or "default:" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def _flag_value(hint: Any) -> Any:
    """How a setting's flag reads its text: as the type itself, or, for a setting that takes a
    list (conv_channels, filters_pruned, threshold_layers), 'a,b' as a list and 'a' as YAML."""
    from prunerlib.values import options

    choices = options(hint)
    if any(getattr(o, "__origin__", None) is tuple for o in choices):
        return lambda text: [yaml.safe_load(item) for item in text.split(",")] if "," in text else yaml.safe_load(text)
    return choices[0] if choices[0] in (int, float) else str


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """A flag per trial setting (`--angle-cutoff` for angle_cutoff), TrialConfig's own grouped
    by role and each pruner's under its name: what the registry knows, the parser offers."""
    from prunerlib import registry
    from prunerlib.config import DATASET_DEFAULTS, ROLES, setting_defaults, setting_help, setting_hints
    from prunerlib.values import describe_type

    hints, texts, defaults = setting_hints(), setting_help(), setting_defaults()
    groups: dict[str, Any] = {}
    for name, hint in hints.items():
        owner = registry.setting_owner(name)
        title = f"pruner {owner}" if owner else f"{ROLES[name]} settings"
        group = groups.get(title) or groups.setdefault(title, parser.add_argument_group(title))
        flag = "--" + name.replace("_", "-")
        text = texts[name].replace("%", "%%")
        if name == "pruner":
            text = " | ".join(registry.PRUNERS)
        # The flag's own default is None (unset: a config file's value stands); --help shows the setting's.
        default = defaults[name]
        if default is None and name in DATASET_DEFAULTS["waveform"]:
            default = "the dataset's"
        if default is not None and "(default" not in text:
            text += f" (default: {','.join(map(str, default)) if isinstance(default, tuple) else default})"
        if hint is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            shown = describe_type(hint)
            metavar = _METAVARS.get(name) or (shown.upper() if shown in ("int", "float", "str") else
                                              shown.replace(" | ", "|") if "|" in shown and " or " not in shown
                                              else "VALUE")
            group.add_argument(flag, type=_flag_value(hint), metavar=metavar, help=text)


_METAVARS = {"data": "PATH", "pruner": "NAME", "match": "NAME", "device": "auto|cpu|cuda[:N]"}


def plugin_paths(argv: Sequence[str]) -> list[str]:
    """The `--plugin PATH` values of a command line, read before the parser is built: a
    plugin's pruner adds flags (its settings) the parser must know."""
    paths = []
    for i, arg in enumerate(argv):
        if arg == "--plugin" and i + 1 < len(argv):
            paths.append(argv[i + 1])
        elif arg.startswith("--plugin="):
            paths.append(arg.partition("=")[2])
    return paths


def build_parser() -> argparse.ArgumentParser:
    from prunerlib import __version__

    parser = _Parser(prog="prunerlib", description="Pretrain → prune → fine-tune trials for pruning research.")
    parser.add_argument("--version", action="version", version=f"prunerlib {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run one trial and append its rows to a Parquet file")
    run.add_argument("--config", type=Path, help="YAML file of trial settings (flags override it)")
    run.add_argument("--plugin", action="append", default=[], metavar="PATH.py",
                     help="a Python file that registers a pruner of your own (repeatable)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="any trial setting, value in YAML syntax (repeatable; overrides everything)")
    run.add_argument("--out", type=Path, default=Path("runs/results.parquet"), help="Parquet file rows are appended to")
    run.add_argument("--workdir", type=Path, default=Path("runs"),
                     help="where pretrained models are kept and reused, and pruned ones saved (WORKDIR/models)")
    run.add_argument("--save-models", choices=get_args(SaveModels), default="final",
                     help="keep the trial's compacted model: the final one, every cycle's, or none (default: final)")
    run.add_argument("--measure-latency", action=argparse.BooleanOptionalAction, default=True,
                     help="time the dense and the pruned network (default: on)")
    run.add_argument("--latency-batch", type=int, default=256, metavar="N", help="batch size timed, besides 1 (default: 256)")
    run.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    add_setting_flags(run)

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
                       help="override the spec, value in YAML syntax (repeatable): a trial setting (lr=0.01, goes "
                            "under fixed), a top-level key (seeds=[0,1], name=try2) or a dotted path "
                            "(search.num_samples=80, resources.gpu=0.5)")

    from prunerlib.analysis.command import add_report_parser
    from prunerlib.saved_cli import add_parsers as add_saved_parsers
    from prunerlib.sensitivity_cli import add_parser as add_sensitivity_parser

    add_report_parser(commands)
    add_saved_parsers(commands)
    add_sensitivity_parser(commands)

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
    from prunerlib.config import setting_hints

    for name in setting_hints():
        value = getattr(args, name, None)
        if value is not None:
            settings[name] = value
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
    if args.latency_batch < 1:
        raise ConfigError(f"--latency-batch: must be at least 1, got {args.latency_batch}")
    dirs = Workdirs(pretrained=args.workdir / "pretrained", models=args.workdir / "models", save_models=args.save_models,
                    results=args.out.resolve().parent, latency_batch=args.latency_batch if args.measure_latency else None)
    rows = run_trial(cfg, dirs, progress=not args.quiet)
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
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        from prunerlib import plugins

        plugins.load(plugin_paths(argv), key="--plugin")
    except PrunerlibError as exc:
        print(f"prunerlib: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        from prunerlib.analysis.command import run_report
        from prunerlib.saved_cli import run_evaluate, run_export
        from prunerlib.sensitivity_cli import run as run_sensitivity

        return {"run": _run, "sweep": _sweep, "report": run_report, "data": _data, "evaluate": run_evaluate,
                "export": run_export, "sensitivity": run_sensitivity}[args.command](args)
    except PrunerlibError as exc:
        print(f"prunerlib {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # output piped into `head`: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entry(argv: Sequence[str] | None = None) -> NoReturn:
    """The `prunerlib` command (and `python -m prunerlib`, sweeps/launch.py): `main`, then the
    process ends at once. Python's own teardown of the torch and Ray modules a sweep imported
    takes over a second (benchmarks/README.md) and writes nothing: every file a command writes is closed (and renamed into
    place) before `main` returns, and Ray is shut down by then."""
    code = main(argv)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe, or stderr closed after a BrokenPipeError
            pass
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    entry()
