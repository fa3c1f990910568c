"""Faults a sweep folder must survive without lying: each test breaks real files (or sends a
real signal to a real `prunerlib sweep`), runs what the user would run next, and checks that
no row is lost or doubled, the exit code, and that the message is one line, not a traceback.

One finished grid sweep (and one search) is made per module and copied for each test."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
import yaml

from prunerlib.cli import main

TINY = {"dataset": "waveform", "n": 600, "epochs_pretrain": 3, "epochs_finetune": 2, "patience": 2}
GRID = {"name": "faults", "fixed": TINY, "seeds": [0, 1], "pack_size": 3, "max_failures": 0,
        "grid": [{"pruner": "threshold", "threshold_factor": [0.5, 1.0]},
                 {"pruner": "none", "lr": 1e38, "optimizer": "sgd"}]}  # diverges: a failed row
SEARCH = {"name": "found", "fixed": {**TINY, "pruner": "threshold"}, "seeds": [0], "pack_size": 2,
          "search": {"sampler": "random", "num_samples": 6, "seed": 0,
                     "objectives": {"val_acc_finetuned": "max", "weights_removed_frac": "max"},
                     "space": {"threshold_factor": {"low": 0.25, "high": 3.0}}}}
# Slow enough that a worker killed as soon as its trial shows (polled every 0.1 s) dies mid-pack:
# the kernel fine-tunes 30 epochs of 600 examples in milliseconds, these in most of a second.
SLOW = {**GRID, "name": "slow", "fixed": {**TINY, "epochs_finetune": 2000}, "max_concurrent": 1, "pack_size": 2}


def cli(*args: str, cwd: Path, wait: bool = True):
    command = [sys.executable, "-m", "prunerlib.cli", *args]
    if not wait:  # its own process group, so the test stops exactly what it started
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                                start_new_session=True)
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=600)


def stop_group(proc: subprocess.Popen) -> None:
    """Kill what the test started: the driver's session (Ray's workers get process groups of
    their own inside it)."""
    for pid in _session(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _session(sid: int, title: str = "") -> list[int]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, IndexError):
            continue
        if int(stat[3]) == sid and title in cmdline:
            found.append(int(proc.name))
    return found


def made(tmp_path_factory, spec: dict) -> Path:
    base = tmp_path_factory.mktemp(spec["name"])
    (base / "spec.yaml").write_text(yaml.safe_dump(spec))
    assert main(["sweep", str(base / "spec.yaml"), "--storage", str(base / "runs")]) == 0
    return base


@pytest.fixture(scope="module")
def finished_grid(tmp_path_factory, ray_here) -> Path:
    return made(tmp_path_factory, GRID)


@pytest.fixture(scope="module")
def ray_here():
    """One embedded Ray for the in-process resumes of this module (a sweep started by main()
    uses a Ray that is already up and leaves it running)."""
    import ray

    # Workers' own output stays in Ray's logs: Ray prints "Exception ignored ... SystemExit" with
    # a traceback when it stops an actor, which is not the sweep's to answer for; the driver's
    # messages, which these tests read, are unaffected.
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def grid(finished_grid, tmp_path, monkeypatch, ray_here) -> Path:
    shutil.copytree(finished_grid, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "runs" / "faults"


def resume(*extra: str, spec: str = "spec.yaml") -> int:
    return main(["sweep", spec, "--storage", "runs", "--resume", *extra])


def rows(folder: Path) -> pd.DataFrame:
    df = pd.read_parquet(folder / "results.parquet")
    assert not df[["trial_id", "cycle"]].duplicated().any()
    return df


def one_line(text: str) -> None:
    assert "Traceback" not in text and len([line for line in text.splitlines() if "error" in line]) <= 1, text


def test_resume_reruns_a_configuration_whose_trial_file_was_deleted(grid, capsys):
    before = rows(grid)
    lost = grid / "trials" / f"{before['trial_id'].iloc[0]}.arrow"
    lost.unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in (grid / "trials").glob("*.arrow")}
    assert resume() == 0
    after = rows(grid)
    assert len(after) == len(before) == 6 and set(after["trial_id"]) == set(before["trial_id"]) and lost.exists()
    assert {p.name: p.stat().st_mtime_ns for p in (grid / "trials").glob("*.arrow") if p.name in kept} == kept
    assert "1 of 3 pack(s) to run" in capsys.readouterr().out


def test_a_truncated_trial_file_is_moved_aside_and_run_again(grid, capsys):
    victim = sorted((grid / "trials").glob("*.arrow"))[2]
    victim.write_bytes(victim.read_bytes()[:300])
    assert resume() == 0
    err = "\n".join(line for line in capsys.readouterr().err.splitlines() if " pid=" not in line)  # not Ray's workers
    assert f"{victim} is unreadable" in err and "Traceback" not in err
    assert victim.with_name(victim.name + ".corrupt").exists()
    assert len(rows(grid)) == 6 and len(feather.read_table(victim)) >= 1


def test_unreadable_tune_state_is_rebuilt_from_the_plan_and_the_trial_files(grid, capsys):
    for path in (grid / "tune").rglob("*"):  # what a full disk leaves: every state file cut short
        if path.is_file():
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    lost = sorted((grid / "trials").glob("*.arrow"))[-1]
    lost.unlink()
    assert resume() == 0
    assert "resuming from packs.json and 5 trial file(s)" in capsys.readouterr().out
    assert len(rows(grid)) == 6 and lost.exists()


def test_leftover_temporaries_are_cleared_and_files_follow_the_umask(grid):
    (grid / ".results.parquet.abc.tmp").write_text("half")
    (grid / "trials" / ".0123.arrow.abc.tmp").write_text("half")
    old = os.umask(0o002)
    try:
        assert resume() == 0
    finally:
        os.umask(old)
    assert not list(grid.glob(".*.tmp")) and not list((grid / "trials").glob(".*.tmp"))
    assert (grid / "results.parquet").stat().st_mode & 0o777 == 0o664  # group-readable, as the umask says


def test_retry_failed_replaces_the_failed_rows_instead_of_adding_to_them(grid):
    before = rows(grid)
    failed = before[before["status"] != "ok"]
    assert len(failed) == 2
    assert resume("--retry-failed") == 0
    after = rows(grid)
    assert len(after) == 6 and set(after["trial_id"]) == set(before["trial_id"])
    again = after.set_index("trial_id").loc[failed["trial_id"]]
    assert (again["started_at"].array > failed["started_at"].array).all()  # run again, kept once


def test_resume_of_a_sweep_that_is_not_there_or_not_writable_is_one_line(grid, capsys):
    assert main(["sweep", "spec.yaml", "--storage", "rnus", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "there is no sweep 'faults'" in err and "check --storage" in err and not Path("rnus/faults").exists()
    assert main(["sweep", "spec.yaml", "--storage", "/proc/sys/runs"]) == 2
    err = capsys.readouterr().err
    assert "storage: cannot write" in err
    one_line(err)


def wait_for(condition, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 120
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_sweep_exits_non_zero_with_the_command_that_continues_it(tmp_path, monkeypatch, ray_here,
                                                                               signum, capsys):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SLOW))
    driver = cli("sweep", "spec.yaml", "--storage", "runs", cwd=tmp_path, wait=False)
    try:
        folder = tmp_path / "runs" / "slow"
        wait_for(lambda: (folder / "packs.json").exists(), driver, "the sweep never planned its packs")
        monkeypatch.chdir(tmp_path)
        # Meanwhile a second driver on the same folder is refused: it would run the same trials.
        assert resume() == 2 and f"is being run by pid {driver.pid}" in capsys.readouterr().err
        time.sleep(1)
        driver.send_signal(signum)
        out, err = driver.communicate(timeout=120)
    finally:
        stop_group(driver)
    assert driver.returncode == 128 + signum, out[-2000:] + err[-2000:]
    # The driver's own messages; a worker's lines, forwarded by Ray with a "(pack_trial pid=N)"
    # prefix, may hold Ray's SIGTERM handler firing inside a weakref callback as it stops them.
    ours = "\n".join(line for line in err.splitlines() if "(pack_trial pid=" not in line)
    assert "Traceback" not in ours and "*** SIGTERM received" not in ours and "PC: @" not in ours, ours[-2000:]
    line = next(line for line in err.splitlines() if "continue with:" in line)
    assert f"interrupted by {signal.Signals(signum).name}" in line and " of 6 configuration(s) have rows" in line
    command = line.split("continue with: ")[1].split()
    assert command[:2] == ["prunerlib", "sweep"] and "--resume" in command
    if signum == signal.SIGTERM:
        return  # resuming after SIGINT shows the command works; once is enough
    assert main(command[1:]) == 0
    df = rows(folder)
    assert len(df) == 6 and df["trial_id"].nunique() == 6


def test_a_killed_trial_is_a_shortfall_with_the_resume_command_then_resume_completes(tmp_path, monkeypatch, ray_here):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SLOW))
    driver = cli("sweep", "spec.yaml", "--storage", "runs", cwd=tmp_path, wait=False)
    try:
        wait_for(lambda: bool(_session(driver.pid, "ray::ImplicitFunc")), driver, "no Tune trial started")
        for pid in _session(driver.pid, "ray::ImplicitFunc"):  # a lost node: the trial's worker dies, max_failures is 0
            os.kill(pid, signal.SIGKILL)
        out, err = driver.communicate(timeout=300)
    finally:
        stop_group(driver)
    assert driver.returncode == 1, out[-2000:] + err[-2000:]
    line = next(line for line in err.splitlines() if line.startswith("incomplete:"))
    assert "configuration(s) have no rows" in line and "continue with: prunerlib sweep spec.yaml" in line
    monkeypatch.chdir(tmp_path)
    assert resume() == 0
    assert len(rows(tmp_path / "runs" / "slow")) == 6


def test_a_journal_cut_short_mid_search_is_told_again_from_the_trial_files(tmp_path, monkeypatch, ray_here, capsys):
    import threading

    import optuna

    from tests.test_sweep_runner import load_study

    monkeypatch.chdir(tmp_path)
    Path("spec.yaml").write_text(yaml.safe_dump(SEARCH))
    folder = tmp_path / "runs" / "found"
    codes = []
    driver = threading.Thread(target=lambda: codes.append(main(["sweep", "spec.yaml", "--storage", "runs"])))
    driver.start()
    deadline = time.monotonic() + 120
    while len(list((folder / "trials").glob("*.arrow"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    journal = folder / "optuna.journal"
    journal.write_bytes(journal.read_bytes()[: journal.stat().st_size // 2])  # mid-line, as a full disk leaves it
    driver.join(timeout=300)
    assert codes and (folder / "results.parquet").exists()
    assert resume() == 0
    # No traceback, whoever met the cut journal first: the running driver (when it read the
    # study after the cut, it says so in one line: "the Optuna journal no longer parses") or
    # the resume (which keeps the lines that parse and moves the file aside).
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "the Optuna journal no longer parses" in err or "optuna.journal was unreadable after line" in err
    study = load_study(folder)
    done = {round(t.params["threshold_factor"], 12) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    df = rows(folder)
    assert done == {round(f, 12) for f in df["threshold_factor"]} and len(df) >= 6  # journal and rows agree
    assert all(t.state.is_finished() for t in study.trials)


# --- prunerlib run --out ---------------------------------------------------------------------
RUN = ["run", "--pruner", "threshold", "--set", "n=600", "--epochs-pretrain", "2", "--epochs-finetune", "1",
       "--quiet"]


@pytest.mark.parametrize("kind", ["folder", "corrupt", "other schema", "read-only"])
def test_an_unusable_out_is_refused_before_any_training(tmp_path, capsys, kind):
    out = tmp_path / "out.parquet"
    if kind == "folder":
        out.mkdir()
    elif kind == "corrupt":
        out.write_bytes(b"PAR1 not really")
    elif kind == "other schema":
        pq.write_table(pa.table({"x": [1, 2]}), out)
    else:
        out = Path("/proc/sys/out.parquet")
    assert main([*RUN, "--out", str(out), "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prunerlib run: error: --out:") and err.count("\n") == 1, err
    assert not (tmp_path / "w").exists()  # refused before pretraining


def test_a_symlinked_out_is_appended_through_the_link(tmp_path):
    target = tmp_path / "shared" / "results.parquet"
    target.parent.mkdir()
    link = tmp_path / "mine.parquet"
    link.symlink_to(target)
    assert main([*RUN, "--out", str(link), "--workdir", str(tmp_path / "w")]) == 0
    assert main([*RUN, "--seed", "1", "--out", str(link), "--workdir", str(tmp_path / "w")]) == 0
    assert link.is_symlink() and len(pd.read_parquet(target)) == 2


def test_rows_that_cannot_be_written_after_training_are_rescued_beside_out(tmp_path, capsys, monkeypatch):
    from prunerlib import records

    def disk_full(path, rows):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(records, "append_parquet", disk_full)  # the disk fills up during training
    out = tmp_path / "out.parquet"
    assert main([*RUN, "--out", str(out), "--workdir", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err, err
    (rescued,) = tmp_path.glob("out.parquet.rescue-*.parquet")
    assert str(rescued) in err and not out.exists()
    rows = pd.read_parquet(rescued)
    assert len(rows) == 1 and rows["status"].eq("ok").all() and rows["pruner"].eq("threshold").all()
