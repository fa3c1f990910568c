import numpy as np
import pytest

from prunerlib import waveform
from prunerlib.errors import DataError


def test_generator_follows_breiman():
    x, y = waveform.generate(30000, 40, seed=1)
    assert x.shape == (30000, 40) and x.dtype == np.float32
    assert set(np.unique(y)) == {0, 1, 2}
    assert np.allclose(np.bincount(y) / len(y), 1 / 3, atol=0.01)
    # Class 0 mixes waves A (peak at 6) and B (peak at 14): mean u = 0.5 gives 3 + noise at
    # both peaks; every class is ~0 at position 0, beyond all three triangles.
    means = np.stack([x[y == c, :21].mean(0) for c in range(3)])
    assert means[0, 6] == pytest.approx(3.0, abs=0.1)
    assert means[0, 14] == pytest.approx(3.0, abs=0.1)
    assert means[2, 10] == pytest.approx(0.5 * 2 + 0.5 * 6, abs=0.1)  # B reaches 2 at 10, C peaks
    assert means[1, 14] == pytest.approx(0.5 * 2, abs=0.1)  # C (centre 10) reaches 2 at 14
    assert np.abs(means[:, 0]).max() < 0.1
    # The 19 extra attributes are pure N(0, 1) noise.
    assert abs(x[:, 21:].mean()) < 0.02 and x[:, 21:].std() == pytest.approx(1.0, abs=0.02)
    assert x[y == 0, 6].std() > 1.0  # noise plus the random mixing weight


def test_generator_is_seeded():
    a, _ = waveform.generate(100, 21, seed=3)
    b, _ = waveform.generate(100, 21, seed=3)
    c, _ = waveform.generate(100, 21, seed=4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("attributes", [21, 40])
def test_uci_format_roundtrip(tmp_path, attributes):
    x, y = waveform.generate(50, attributes, seed=0)
    path = tmp_path / "waveform.data"
    waveform.write_uci(path, x, y)
    first = path.read_text().splitlines()[0].split(",")
    assert len(first) == attributes + 1
    assert all(len(v.split(".")[1]) == 2 for v in first[:-1])  # two decimals
    assert first[-1] in {"0", "1", "2"}
    rx, ry = waveform.read_uci(path)
    assert np.array_equal(ry, y)
    assert np.abs(rx - x).max() <= 0.005 + 1e-6


def test_reads_the_published_layout(tmp_path):
    path = tmp_path / "waveform.data"
    path.write_text("-1.23,0.45," + ",".join(["0.00"] * 19) + ",2\n" + ",".join(["1.00"] * 21) + ",0\n")
    x, y = waveform.read_uci(path)
    assert x.shape == (2, 21) and list(y) == [2, 0] and x[0, 0] == pytest.approx(-1.23)


@pytest.mark.parametrize("content, message", [
    ("1,2,3\n", "expected 22 or 41 columns"),
    (",".join(["a"] * 22) + "\n", "not comma-separated numbers"),
    (",".join(["0"] * 21) + ",7\n", "class label"),
    ("", "no rows"),
])
def test_malformed_files_say_where(tmp_path, content, message):
    path = tmp_path / "bad.data"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        waveform.read_uci(path)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e308", "1e20"])
def test_a_value_that_is_not_a_usable_number_names_its_line(tmp_path, value):
    path = tmp_path / "bad.data"
    x, y = waveform.generate(6, 21, seed=0)
    waveform.write_uci(path, x, y)
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[2], value, 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"^data: {path}:4: column 3 .*{value}"):
        waveform.read_uci(path)


def test_a_byte_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "bad.data"
    path.write_bytes((",".join(["0.00"] * 21) + ",1\n").encode() * 2 + b"0.1\xe9," + b"0," * 20 + b"1\n")
    with pytest.raises(DataError, match=rf"^data: {path}:3: not UTF-8 text"):
        waveform.read_uci(path)
