"""Sensitivity scan: how much of ONE layer can each criterion remove, without fine-tuning?

From the shared pretrained model (`pretrained.load_or_pretrain`), each prunable structure —
a conv layer's filters, the hidden layer's units, the hidden layer's incoming weights — is
pruned alone, by each criterion, at each fraction, and the model is evaluated as it is:
validation accuracy (what a selection may read) and test accuracy (what is reported). Each
(layer, criterion) is ranked once on the pretrained model and every fraction removes a prefix
of that ranking, so the curve is nested: the units removed at 0.3 include those at 0.2.

Rows go to `DIR/sensitivity.parquet`, the criteria's pairwise agreement to
`DIR/agreement.parquet` (`prunerlib.agreement`); a rerun of a seed replaces that seed's rows.
No Ray here: a scan is minutes on one core.
"""

from __future__ import annotations

import copy
import datetime as dt
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from prunerlib import agreement
from prunerlib.config import ROLES, TrialConfig
from prunerlib.errors import ConfigError
from prunerlib.masks import Masks
from prunerlib.models import FilterLayer, UnitLayer
from prunerlib.pruners.base import PruneContext, capture
from prunerlib.pruners.filters import CRITERIA as FILTER_CRITERIA
from prunerlib.surgery import Removal, apply_removal

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SCAN_FILE, AGREEMENT_FILE = "sensitivity.parquet", "agreement.parquet"
# The method whose own removal set the hidden layer's agreement includes (it decides its count).
REFERENCE = "distinctiveness"


# --- unit criteria: the filter criteria, read on a hidden layer (lowest score goes first) ----
class UnitL1:
    """Sum of |incoming weights| of the unit."""

    def scores(self, ctx: PruneContext, layer: UnitLayer) -> torch.Tensor:
        return ctx.model.get_submodule(layer.incoming).weight.detach().abs().sum(1)


class UnitMeanActivation:
    """Mean activation over the training inputs."""

    def scores(self, ctx: PruneContext, layer: UnitLayer) -> torch.Tensor:
        return capture(ctx.model, layer.activation, ctx.inputs).mean(0)


class UnitAPoZ:
    """Share of exact zeros after the activation. Only ReLU units are ever exactly 0: on sigmoid
    or tanh units every score ties and the ranking is the units' order (said in the report)."""

    def scores(self, ctx: PruneContext, layer: UnitLayer) -> torch.Tensor:
        return -(capture(ctx.model, layer.activation, ctx.inputs) == 0).double().mean(0)


class UnitRandom:
    def scores(self, ctx: PruneContext, layer: UnitLayer) -> torch.Tensor:
        return torch.rand(ctx.model.get_submodule(layer.incoming).out_features, generator=ctx.generator)


UNIT_CRITERIA = {"l1": UnitL1(), "mean_activation": UnitMeanActivation(), "apoz": UnitAPoZ(), "random": UnitRandom()}


# --- weight criteria: single weights of the hidden layer's incoming matrix -------------------
def _magnitude(ctx: PruneContext, name: str) -> torch.Tensor:
    """|w|: what threshold pruning cuts, as a ranking instead of a cut-off."""
    return dict(ctx.model.named_parameters())[name].detach().abs().flatten()


def _random_weights(ctx: PruneContext, name: str) -> torch.Tensor:
    return torch.rand(dict(ctx.model.named_parameters())[name].numel(), generator=ctx.generator)


WEIGHT_CRITERIA: dict[str, Callable[[PruneContext, str], torch.Tensor]] = {
    "magnitude": _magnitude, "random": _random_weights}
CRITERIA = tuple(sorted({*FILTER_CRITERIA, *UNIT_CRITERIA, *WEIGHT_CRITERIA}))


@dataclass(frozen=True)
class Target:
    """One structure pruned alone: `what` (filters | units | weights) of `layer`."""

    layer: str
    what: str
    structure: FilterLayer | UnitLayer

    def criteria(self) -> dict[str, Any]:
        return {"filters": FILTER_CRITERIA, "units": UNIT_CRITERIA, "weights": WEIGHT_CRITERIA}[self.what]

    @property
    def weight(self) -> str:
        return f"{self.layer}.weight"

    def size(self, model: nn.Module) -> int:
        module = model.get_submodule(self.layer)
        return module.weight.numel() if self.what == "weights" else module.weight.shape[0]

    def scores(self, name: str, ctx: PruneContext, seed: int) -> np.ndarray:
        ctx.generator.manual_seed(_stream(seed, self, name))
        criterion = self.criteria()[name]
        raw = criterion(ctx, self.weight) if self.what == "weights" else criterion.scores(ctx, self.structure)
        return raw.detach().double().cpu().numpy()

    def count(self, fraction: float, size: int) -> int:
        """Units or filters removed at `fraction`, as filter ranking counts them, leaving one."""
        count = int(round(fraction * size))
        return count if self.what == "weights" else min(count, size - 1)

    def removal(self, order: np.ndarray, count: int, model: nn.Module) -> Removal:
        chosen = sorted(order[:count].tolist())
        if self.what == "filters":
            return Removal(filters={self.layer: chosen})
        if self.what == "units":
            return Removal(units={self.layer: chosen})
        where = torch.zeros(self.size(model), dtype=torch.bool)
        where[chosen] = True
        return Removal(weights={self.weight: where.reshape(model.get_submodule(self.layer).weight.shape)})


def _stream(seed: int, target: Target, name: str) -> int:
    """A random criterion's own seed per (seed, layer, what): the same choice whatever else the
    scan includes, and another one for every seed."""
    return (seed * 1_000_003 + zlib.crc32(f"{target.layer}/{target.what}/{name}".encode())) % 2**63


def targets(model: nn.Module) -> list[Target]:
    found = [Target(layer.conv, "filters", layer) for layer in model.filter_layers]
    for layer in model.unit_layers:
        found += [Target(layer.incoming, "units", layer), Target(layer.incoming, "weights", layer)]
    return found


# Pruning settings a scan reads: which patterns activation criteria see, and distinctiveness's
# cutoff for the agreement rows. Every other pruning (or fine-tuning) setting would be silently
# ignored: the CLI and a sweep spec refuse them.
READ_SETTINGS = ("distinct_max_patterns", "angle_cutoff")


def ignored(setting: str) -> bool:
    """Whether a scan would ignore `setting` (it prunes by its own criteria and never fine-tunes)."""
    from prunerlib import registry

    return (ROLES.get(setting) in ("pruning", "finetuning") or bool(registry.setting_owner(setting))) \
        and setting not in READ_SETTINGS


def check_request(fractions: Sequence[float], criteria: Sequence[str]) -> None:
    for name in criteria:
        if name not in CRITERIA:
            raise ConfigError(f"--criteria: unknown criterion {name!r}; known: {', '.join(CRITERIA)}")
    if not criteria:
        raise ConfigError(f"--criteria: give at least one of {', '.join(CRITERIA)}")
    for fraction in fractions:
        if not 0 < fraction < 1:
            raise ConfigError(f"--fractions: {fraction:g} is outside (0, 1); give shares such as 0.1,0.5,0.9")
    if not fractions:
        raise ConfigError("--fractions: give at least one share in (0, 1), e.g. 0.1,0.5,0.9")


@dataclass
class Scanner:
    """One configuration's pretrained model, ready to have its structures pruned one at a time."""

    cfg: TrialConfig
    data: Any  # prunerlib.datasets.Data, on the scan's device
    model: nn.Module
    ctx: PruneContext
    common: dict[str, Any]  # what every row of this seed carries
    device: torch.device

    def scan_target(self, target: Target, fractions: Sequence[float], criteria: Sequence[str],
                    step: Callable[[], None] = lambda: None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """One structure by each of `criteria` it takes, at each fraction: its sensitivity rows and
        its agreement rows (which need every criterion of the structure together)."""
        from prunerlib.training import accuracy

        model, data = self.model, self.data
        size = target.size(model)
        counts = {f: target.count(f, size) for f in fractions}
        rows, scores, orders = [], {}, {}
        for name in (c for c in criteria if c in target.criteria()):
            scores[name] = target.scores(name, self.ctx, self.cfg.seed)
            orders[name] = np.argsort(scores[name], kind="stable")  # lowest first, ties in index order
            for fraction, count in counts.items():
                pruned = copy.deepcopy(model)
                apply_removal(pruned, Masks(pruned).to(self.device), target.removal(orders[name], count, model))
                rows.append({"layer": target.layer, "what": target.what, "criterion": name, "fraction": fraction,
                             "size": size, "removed": count, "acc_val": accuracy(pruned, data.val_x, data.val_y),
                             "acc_test": accuracy(pruned, data.test_x, data.test_y)})
                step()
        found = agreement.pair_rows(scores, orders, counts)
        if target.what == "units" and orders:
            found += agreement.reference_rows(REFERENCE, _distinctive(self.cfg, self.ctx, target), size, orders)
        return rows, [{"layer": target.layer, "what": target.what, **row} for row in found]

    def frames(self, rows: list[dict[str, Any]], pairs: list[dict[str, Any]], wall: float,
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The rows as the two files hold them; `wall` is the time they took."""
        sens = pd.DataFrame([{**row, **self.common, "wall_s": wall} for row in rows])
        agree = pd.DataFrame([{**row, **self.common, "angle_cutoff": self.cfg.angle_cutoff} for row in pairs])
        return sens, agree


def prepare(cfg: TrialConfig, workdir: Path, progress: bool = True, device: torch.device | None = None) -> Scanner:
    """Load the data and the pretrained model (from `workdir`/pretrained, training it if no one has),
    on `device` (default: what `cfg.device` means on this machine)."""
    from prunerlib.datasets import load_data
    from prunerlib.devices import resolve_device
    from prunerlib.pretrained import load_or_pretrain
    from prunerlib.records import provenance
    from prunerlib.training import set_numerics

    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    device = device or resolve_device(cfg.device)
    set_numerics(device, cfg.exact)
    data = load_data(cfg).to(device)  # the machine-wide image cache, as prunerlib run uses
    model, pre = load_or_pretrain(cfg, data, Path(workdir) / "pretrained", device, progress)
    model.eval()
    sample = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(cfg.seed))
    ctx = PruneContext(model, Masks(model).to(device), data.train_x[sample[: cfg.distinct_max_patterns].to(device)],
                       torch.Generator())
    common = {**_settings(cfg), "seed": cfg.seed, "pretrain_key": cfg.pretrain_key(), "scan": scan_key(cfg),
              "acc_val_pretrained": pre.acc_val, "acc_test_pretrained": pre.acc_test,
              **{k: provenance()[k] for k in ("host", "prunerlib_version", "torch_version", "git_commit")},
              "started_at": started}
    return Scanner(cfg, data, model, ctx, common, device)


def structures(cfg: TrialConfig) -> list[tuple[str, str]]:
    """(layer, what) of every structure a scan of `cfg` prunes, without data or training: a
    sweep plans its units from it."""
    from prunerlib.models import build_model

    with torch.device("meta"):  # names and shapes only: no memory, no initialisation worth the name
        model = build_model(cfg, in_features=1, classes=2)
    return [(t.layer, t.what) for t in targets(model)]


def scan(cfg: TrialConfig, out: Path, *, fractions: Sequence[float] = FRACTIONS,
         criteria: Sequence[str] = CRITERIA, workdir: Path = Path("runs"), progress: bool = True,
         ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scan `cfg`'s pretrained model and write (replacing this seed's rows) both files in `out`.
    Returns this seed's (sensitivity, agreement) rows."""
    from tqdm.auto import tqdm

    check_request(fractions, criteria)
    clock = time.perf_counter()
    scanner = prepare(cfg, workdir, progress)
    found = targets(scanner.model)
    jobs = sum(1 for t in found for name in criteria if name in t.criteria())
    bar = tqdm(total=jobs * len(fractions), desc="sensitivity", unit="eval", leave=False,
               disable=not progress or None)
    rows, pairs = [], []
    for target in found:
        more, agreeing = scanner.scan_target(target, fractions, criteria, bar.update)
        rows += more
        pairs += agreeing
    bar.close()
    sens, agree = scanner.frames(rows, pairs, time.perf_counter() - clock)
    replace_rows(out / SCAN_FILE, sens, cfg)
    replace_rows(out / AGREEMENT_FILE, agree, cfg)
    return sens, agree


def _distinctive(cfg: TrialConfig, ctx: PruneContext, target: Target) -> list[int]:
    """The units distinctiveness removes from the pretrained model at `cfg.angle_cutoff`."""
    from prunerlib.pruners.distinctiveness import Distinctiveness

    removal = Distinctiveness(cfg).decide(ctx)
    return removal.units.get(target.layer, [])


def _settings(cfg: TrialConfig) -> dict[str, Any]:
    """The data and model settings, as the trial rows write them (null where they do not apply)."""
    return {k: v for k, v in cfg.columns().items() if ROLES.get(k) in ("data", "model")}


def scan_key(cfg: TrialConfig) -> str:
    """Which scan a row belongs to, whatever its seed: its pretrained model's settings but the seed.
    Seeds of one scan accumulate in a file; another data or model is another scan beside them."""
    return cfg.replace(seed=0).pretrain_key()


def replace_rows(path: Path, rows: pd.DataFrame, cfg: TrialConfig) -> None:
    """Write `rows` into `path`, replacing the rows of the same scan and seed (a rerun), under
    a lock so two scans writing one folder keep each other's rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from prunerlib.files import atomic_write, locked

    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.with_name(f".{path.name}.lock")):
        frame = rows
        if path.exists():
            old = pq.read_table(path).to_pandas()
            keep = old[~((old["scan"] == scan_key(cfg)) & (old["seed"] == cfg.seed))]
            frame = pd.concat([keep, rows], ignore_index=True) if len(keep) else rows
        table = pa.Table.from_pandas(frame, preserve_index=False)
        atomic_write(path, lambda tmp: pq.write_table(table, tmp))
