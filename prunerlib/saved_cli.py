"""`prunerlib evaluate` and `prunerlib export`: what a saved pruned model (`saved`) does on its
trial's test set, and the same network as a file that runs without prunerlib.

Nothing heavy is imported at module level: `prunerlib.cli` imports this module for every command.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, get_args

from prunerlib.errors import ConfigError, DataError


def add_parsers(subcommands: Any) -> None:
    """`evaluate` and `export`, added to the CLI's subcommands."""
    from prunerlib.config import Dataset

    evaluate = subcommands.add_parser(
        "evaluate", help="test accuracy, parameters, size and latency of a saved pruned model",
        description="Rebuild the trial's test set from the model file's configuration, and print the model's "
                    "test accuracy (against the trial's recorded acc_finetuned), parameter count, file size "
                    "and measured latency.")
    evaluate.add_argument("model", type=Path, help="a saved pruned model (<models>/<trial_id>.pt)")
    evaluate.add_argument("--dataset", choices=get_args(Dataset),
                          help="the model's dataset (default: the one it was trained on; another is an error)")
    evaluate.add_argument("--data", type=Path, metavar="PATH",
                          help="the data file or photo folder, if it moved since the trial (default: the trial's)")
    evaluate.add_argument("--device", default="auto", metavar="cpu|cuda|auto", help="where to run (default: auto)")
    evaluate.add_argument("--latency-batch", type=int, default=256, metavar="N",
                          help="batch size timed, besides 1 (default: 256)")

    export = subcommands.add_parser(
        "export", help="write a saved pruned model as TorchScript or torch.export, to run without prunerlib",
        description="Write the network as a file torch alone loads; prunerlib.json inside holds its class names, "
                    "input shape and preprocessing.")
    export.add_argument("model", type=Path, help="a saved pruned model (<models>/<trial_id>.pt)")
    export.add_argument("--format", required=True, choices=("torchscript", "exported"),
                        help="torchscript (torch.jit.load) or exported (torch.export.load)")
    export.add_argument("--out", type=Path, required=True, help="file to write (replaced if it exists)")


def run_evaluate(args: argparse.Namespace) -> int:
    from prunerlib import latency, saved
    from prunerlib.datasets import load_data
    from prunerlib.devices import resolve_device
    from prunerlib.training import accuracy, set_numerics

    if args.latency_batch < 1:
        raise ConfigError(f"--latency-batch: must be at least 1, got {args.latency_batch}")
    device = resolve_device(args.device)
    model = saved.load_pruned(args.model, map_location=device)
    info = model.prunerlib
    cfg = _data_config(args, info["config"])
    set_numerics(device, cfg.exact)  # as the trial ran: same kernels, same accuracy
    data = load_data(cfg).to(device)
    about = info["about"]
    acc = accuracy(model, data.test_x, data.test_y)
    params = list(model.parameters())
    total, nonzero = sum(p.numel() for p in params), sum(int((p != 0).sum()) for p in params)
    shape = tuple(info["input_shape"])
    ms = {b: latency.median_ms(model, shape, b, device) for b in (args.latency_batch, 1)}
    threads = ", 1 thread" if device.type == "cpu" else ""

    arch = info["architecture"]
    print(f"model          {args.model}  (trial {about.get('trial_id')}, cycle {about.get('cycle')}, "
          f"{arch['model']}, config_hash {info['config_hash']})")
    print(f"test accuracy  {acc:.6g} on {len(data.test_y)} examples  {_agreement(acc, len(data.test_y), data, about)}")
    print(f"parameters     {total:,} ({nonzero:,} non-zero)")
    print(f"file size      {args.model.stat().st_size / 1024:,.1f} KiB")
    print(f"latency        {ms[args.latency_batch]:.4g} ms at batch {args.latency_batch}, {ms[1]:.4g} ms at batch 1 "
          f"({device}{threads}; median forward pass)")
    return 0


def _data_config(args: argparse.Namespace, config: dict[str, Any]):
    """The trial's data settings (and numerics), with the command line's --data / --dataset.
    Only these: the test set depends on nothing else, and a plugin's pruner need not be loaded
    to evaluate the network it pruned."""
    from prunerlib.config import TrialConfig, columns_with_role

    settings = {key: config[key] for key in (*columns_with_role("data"), "exact") if key in config}
    if args.dataset and args.dataset != settings["dataset"]:
        raise ConfigError(f"--dataset: {args.model} is a {settings['dataset']} model, not {args.dataset} "
                          f"(leave --dataset out)")
    if args.data is not None:
        if not args.data.exists():
            raise DataError(f"--data: {args.data} does not exist")
        settings["data"] = str(args.data)
    elif settings.get("data") and not Path(settings["data"]).exists():
        what = "DIR (the Dogs vs. Cats photo folder)" if settings["dataset"] == "catsdogs" else "FILE (the UCI file)"
        raise DataError(f"data: {args.model} was trained on {settings['data']}, which does not exist here; "
                        f"pass --data {what}")
    return TrialConfig.from_dict(settings)


def _agreement(acc: float, n_test: int, data: Any, about: dict[str, Any]) -> str:
    """Whether `acc` is the trial's own figure, and if not, why it may not be."""
    recorded = about.get("acc_finetuned")
    if recorded is None:
        return "(the file records no acc_finetuned)"
    if acc == recorded:
        return "= the trial's acc_finetuned (reproduced exactly)"
    reasons = []
    if about.get("n_test") is not None and about["n_test"] != n_test:
        reasons.append(f"the trial tested on {about['n_test']} examples")
    if about.get("data_fingerprint") and data.fingerprint and about["data_fingerprint"] != data.fingerprint:
        reasons.append(f"the data differs (fingerprint {data.fingerprint}, the trial's {about['data_fingerprint']})")
    why = "; ".join(reasons) or "same test size: other data of that size, or another device's numerics"
    return f"!= the trial's acc_finetuned {recorded:.6g} ({why})"


def run_export(args: argparse.Namespace) -> int:
    from prunerlib import saved

    model = saved.load_pruned(args.model)
    if args.out.is_dir():
        raise ConfigError(f"--out: {args.out} is a folder; give a file path")
    try:
        size = saved.export(model, args.format, args.out)
    except OSError as exc:
        raise ConfigError(f"--out: cannot write {args.out} ({exc.strerror or exc}); give another --out") from None
    print(f"wrote {args.out} ({args.format}, {size / 1024:,.1f} KiB; metadata in its {saved.EXPORT_META})")
    return 0
