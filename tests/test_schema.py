"""Bad input stops with file, row and field named, or is quarantined with reasons; nothing dropped silently."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from attribution.io import ClickReader, read_clicks, write_clicks
from attribution.schema import ClickSchemaError

HEADER = "ip,app,device,os,channel,click_time,attributed_time,is_attributed\n"
GOOD = "87540,12,1,13,497,2017-11-07 09:30:38,,0\n"
GOOD_POS = "5348,19,0,24,213,2017-11-07 10:00:00,2017-11-07 10:05:00,1\n"

BAD_CASES = [
    ("87540,12,1,13,497,2017-11-07 09:30:38,,0\n".replace("12,", "x12,", 1), "app", "not a non-negative integer"),
    ("-5,12,1,13,497,2017-11-07 09:30:38,,0\n", "ip", "negative id"),
    ("87540,12,1,13,70000,2017-11-07 09:30:38,,0\n", "channel", "larger than"),
    ("87540,12,1,13,497,2017-13-07 09:30:38,,0\n", "click_time", "unparseable time"),
    ("87540,12,1,13,497,yesterday,,0\n", "click_time", "unparseable time"),
    ("87540,12,1,13,497,2017-02-30 09:30:38,,0\n", "click_time", "unparseable time"),
    ("87540,12,1,13,497,2017-11-07 09:30:60,,0\n", "click_time", "unparseable time"),
    ("87540,12,1,13,497,2017-11-07 09:30:38,2017-11-07 09:00:00,1\n", "attributed_time", "earlier than click_time"),
    ("87540,12,1,13,497,2017-11-07 09:30:38,,2\n", "is_attributed", "label must be 0 or 1"),
    ("87540,12,1,,497,2017-11-07 09:30:38,,0\n", "os", "not a non-negative integer"),
    ("87540,12,1.5,13,497,2017-11-07 09:30:38,,0\n", "device", "not a non-negative integer"),
    # 19 digits but past int64: once an ArrowInvalid from the cast (a 5xx when it came in a request)
    ("9223372036854775808,12,1,13,497,2017-11-07 09:30:38,,0\n", "ip", "larger than"),
]


def write(tmp_path: Path, body: str, name: str = "clicks.csv") -> Path:
    p = tmp_path / name
    p.write_text(HEADER + body)
    return p


@pytest.mark.parametrize("bad,field,reason", BAD_CASES, ids=[c[1] + ":" + c[2] for c in BAD_CASES])
def test_bad_row_error_names_file_row_and_field(tmp_path, bad, field, reason):
    path = write(tmp_path, GOOD * 3 + bad + GOOD)
    with pytest.raises(ClickSchemaError) as err:
        read_clicks(path)
    e = err.value
    assert (e.row, e.field) == (4, field)
    msg = str(e)
    assert str(path) in msg and "row 4" in msg and f"'{field}'" in msg and reason in msg


def test_missing_column_is_named(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("ip,app,device,os,click_time\n1,2,3,4,2017-11-07 09:30:38\n")
    with pytest.raises(ClickSchemaError, match="field 'channel': missing column"):
        read_clicks(p)


def test_quarantine_writes_bad_rows_with_reasons_and_counts(tmp_path):
    body = GOOD + BAD_CASES[0][0] + GOOD_POS + BAD_CASES[3][0] + GOOD
    path = write(tmp_path, body)
    side = tmp_path / "bad.csv"
    reader = ClickReader(path, on_bad_rows="quarantine", quarantine_path=side)
    df = pd.concat(list(reader))
    assert len(df) == 3 and reader.bad_rows == 2
    assert df["row_id"].tolist() == [0, 2, 4], "row_id keeps each click's position in the input"
    bad = pd.read_csv(side)
    assert bad["row"].tolist() == [2, 4]
    assert bad["field"].tolist() == ["app", "click_time"]
    assert bad["reason"].str.len().min() > 5


def test_error_row_numbers_count_across_batches(tmp_path):
    path = write(tmp_path, GOOD * 2500 + BAD_CASES[1][0])
    with pytest.raises(ClickSchemaError) as err:
        list(ClickReader(path, batch_rows=1000))
    assert err.value.row == 2501


def test_csv_gz_and_parquet_round_trip(tmp_path, sample_clicks):
    head = sample_clicks.head(2000)
    gz = tmp_path / "c.csv.gz"
    with gzip.open(gz, "wt") as f:
        f.write(HEADER)
    write_clicks(head, tmp_path / "c.csv")
    with open(tmp_path / "c.csv", "rb") as src, gzip.open(gz, "wb") as dst:
        dst.write(src.read())
    pq = write_clicks(head, tmp_path / "c.parquet")
    for p in (tmp_path / "c.csv", gz, pq):
        pd.testing.assert_frame_equal(read_clicks(p), head.reset_index(drop=True), check_dtype=True)


def test_compact_dtypes(sample_clicks):
    assert str(sample_clicks["ip"].dtype) == "uint32"
    assert {str(sample_clicks[c].dtype) for c in ("app", "device", "os", "channel")} == {"uint16"}
    assert str(sample_clicks["click_time"].dtype) == "int64"


def test_kaggle_test_format_with_click_id(tmp_path):
    p = tmp_path / "test.csv"
    p.write_text("click_id,ip,app,device,os,channel,click_time\n0,5744,9,1,3,107,2017-11-10 04:00:00\n")
    df = read_clicks(p)
    assert df["click_id"].tolist() == [0] and "is_attributed" not in df


def test_parquet_sink_keeps_frame_order_and_row_groups(tmp_path):
    """Frames are written on a background thread, several row groups per frame in flight: the file still
    holds every row in call order, in row groups of at most row_group_rows."""
    import numpy as np
    import pyarrow.parquet as pq

    from attribution.io import ParquetSink

    sink = ParquetSink(tmp_path / "s.parquet", row_group_rows=7)
    frames = [pd.DataFrame({"row_id": np.arange(a, b, dtype=np.int64), "x": np.arange(a, b) * 0.5})
              for a, b in ((0, 0), (0, 20), (20, 23), (23, 60))]
    for frame in frames:
        sink.write(frame)
    sink.close()
    meta = pq.ParquetFile(tmp_path / "s.parquet").metadata
    assert sink.rows == 60 and max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) == 7
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "s.parquet"), pd.concat(frames, ignore_index=True))


def test_parquet_sink_failed_write_is_raised(tmp_path):
    """A row group the writer refuses (another schema) fails on its thread and is raised to the caller."""
    from attribution.io import ParquetSink

    sink = ParquetSink(tmp_path / "s.parquet", row_group_rows=4)
    sink.write(pd.DataFrame({"row_id": range(10)}))
    sink.write(pd.DataFrame({"other": ["a"] * 10}))
    with pytest.raises(ValueError, match="schema"):
        sink.close()
