import datetime as dt

import pandas as pd
import pytest

from prunerlib.records import columns, append_parquet


def test_appends_keep_earlier_rows_and_typed_nulls(tmp_path):
    out = tmp_path / "r.parquet"
    now = dt.datetime.now(dt.timezone.utc)
    append_parquet(out, [{"trial_id": "a", "cycle": 1, "acc_finetuned": 0.8, "started_at": now}])
    append_parquet(out, [{"trial_id": "b", "cycle": 1, "filters_removed_frac": 0.5, "attributes": None}])
    df = pd.read_parquet(out)
    assert list(df.columns) == list(columns())
    assert df["trial_id"].tolist() == ["a", "b"]
    assert pd.isna(df.loc[0, "filters_removed_frac"]) and pd.isna(df.loc[1, "acc_finetuned"])
    assert str(df["cycle"].dtype) == "int64"


def test_unknown_columns_are_refused(tmp_path):
    with pytest.raises(KeyError, match="acc_typo"):
        append_parquet(tmp_path / "r.parquet", [{"acc_typo": 1.0}])


def _git(folder, *args):
    import subprocess

    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=folder, check=True,
                   capture_output=True)


def test_rows_name_the_commit_of_a_checkout_and_whether_tracked_files_changed(tmp_path):
    from prunerlib.records import checkout_state

    package = tmp_path / "repo" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    _git(tmp_path / "repo", "init", "-q")
    _git(tmp_path / "repo", "add", "pkg/__init__.py")
    _git(tmp_path / "repo", "commit", "-qm", "first")
    commit, dirty = checkout_state(package)
    assert len(commit) == 40 and dirty is False
    (package / "results.parquet").write_text("")  # an untracked file is not a change to the code
    assert checkout_state(package) == (commit, False)
    (package / "__init__.py").write_text("x = 2\n")
    assert checkout_state(package) == (commit, True)


def test_an_installed_package_has_no_commit_even_inside_some_checkout(tmp_path):
    from prunerlib.records import checkout_state

    _git(tmp_path, "init", "-q")  # a venv inside a project's checkout: site-packages is not tracked
    (tmp_path / "README").write_text("")
    _git(tmp_path, "add", "README")
    _git(tmp_path, "commit", "-qm", "first")
    site = tmp_path / ".venv" / "site-packages" / "prunerlib"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text("")
    assert checkout_state(site) == (None, None)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "__init__.py").write_text("")
    assert checkout_state(tmp_path / "elsewhere") == (None, None)


def test_provenance_carries_this_checkouts_commit():
    import subprocess
    from pathlib import Path

    import prunerlib
    from prunerlib.records import provenance

    folder = Path(prunerlib.__file__).parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True).stdout.strip()
    row = provenance()
    assert row["git_commit"] == (head or None) and isinstance(row["git_dirty"], bool) == bool(head)
    assert {"git_commit", "git_dirty", "optuna_trial"} <= set(columns())
