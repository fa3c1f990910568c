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
