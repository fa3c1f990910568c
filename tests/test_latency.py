"""Measured latency: dense against compacted network, one thread, each shape timed once."""

import time

import pytest
import torch

from prunerlib import latency
from prunerlib.masks import Masks
from prunerlib.pipeline import Workdirs, run_trial
from prunerlib.surgery import Removal, apply_removal, compact
from tests.helpers import ffn_config, small_ffn

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(latency, "_MEASURED", {})


def test_timing_uses_one_thread_then_gives_the_threads_back_and_spends_no_global_randomness(monkeypatch):
    seen = []
    model = small_ffn(8, 6)
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda x: seen.append(torch.get_num_threads()) or forward(x))
    torch.set_num_threads(2)
    try:
        state = torch.get_rng_state()
        ms = latency.median_ms(model, (8,), 4, CPU, budget_s=0.01)
        assert torch.equal(torch.get_rng_state(), state)  # trials after it draw what they would have
        assert torch.get_num_threads() == 2 and set(seen) == {1} and len(seen) >= 3 + 5
    finally:
        torch.set_num_threads(1)
    assert ms > 0 and model.training  # the model is left in the mode it came in


def test_a_shape_is_timed_once_per_process_whatever_its_weights():
    a, b = small_ffn(8, 6, seed=0), small_ffn(8, 6, seed=1)
    first = latency.median_ms(a, (8,), 4, CPU, budget_s=0.01)
    assert latency.median_ms(b, (8,), 4, CPU, budget_s=0.01) == first  # same shapes: the same figure
    assert len(latency._MEASURED) == 1
    latency.median_ms(small_ffn(8, 3), (8,), 4, CPU, budget_s=0.01)
    latency.median_ms(a, (8,), 1, CPU, budget_s=0.01)
    assert len(latency._MEASURED) == 3  # another width, another batch: timed again


def test_a_sub_millisecond_network_stops_at_max_reps_and_a_slow_one_fills_its_budget(monkeypatch):
    passes = []
    model = small_ffn(8, 6)
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda x: passes.append(1) or forward(x))
    latency.median_ms(model, (8,), 4, CPU, budget_s=10.0)  # would take ~10^6 passes of ~10 µs
    assert len(passes) == 3 + latency._MAX_REPS
    slow = small_ffn(8, 5)
    slow_forward = slow.forward
    passes.clear()
    monkeypatch.setattr(slow, "forward", lambda x: passes.append(1) or time.sleep(0.002) or slow_forward(x))
    latency.median_ms(slow, (8,), 4, CPU, budget_s=0.1)
    assert 5 <= len(passes) - 3 <= 0.1 / 0.002  # the budget, not the cap, ended it


def test_only_removed_units_change_what_is_timed():
    model = small_ffn(8, 6)
    masks = Masks(model)
    weights = Removal(weights={"fc1.weight": torch.rand(6, 8, generator=torch.Generator().manual_seed(0)) < 0.5})
    apply_removal(model, masks, weights)
    unstructured = latency.latency_columns(model, compact(model, masks), (8,), 16, CPU)
    # Half the weights are zeros, but the compacted network has the dense one's shapes.
    assert unstructured["measured_speedup"] == 1.0 and unstructured["measured_speedup_b1"] == 1.0
    apply_removal(model, masks, Removal(units={"fc1": [0, 1, 2]}))
    structured = latency.latency_columns(model, compact(model, masks), (8,), 16, CPU)
    assert structured["latency_ms_pruned"] != structured["latency_ms_dense"]
    assert structured["latency_batch"] == 16 and structured["latency_threads"] == 1
    assert structured["measured_speedup"] == structured["latency_ms_dense"] / structured["latency_ms_pruned"]


def test_a_trials_final_row_carries_its_latency_and_earlier_cycles_do_not(tmp_path):
    rows = run_trial(ffn_config(pruner="threshold", cycles=2), Workdirs(tmp_path, latency_batch=32), progress=False)
    assert rows[0].get("latency_ms_dense") is None and rows[0].get("measured_speedup") is None
    final = rows[-1]
    assert final["latency_batch"] == 32 and final["latency_threads"] == 1
    for column in ("latency_ms_dense", "latency_ms_pruned", "latency_ms_dense_b1", "latency_ms_pruned_b1"):
        assert final[column] > 0, column
    # Threshold pruning removed weights but no unit here: FLOPs promise a speedup a dense kernel does not give.
    assert final["units_removed_frac"] == 0 and final["theoretical_speedup"] > 1.5
    assert final["measured_speedup"] == 1.0


def test_a_trial_measures_nothing_unless_asked(tmp_path):
    final = run_trial(ffn_config(pruner="threshold"), Workdirs(tmp_path), progress=False)[-1]
    assert all(final.get(c) is None for c in ("latency_batch", "latency_ms_dense", "measured_speedup", "model_path"))
