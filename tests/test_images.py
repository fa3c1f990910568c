import io
import logging
import os
import stat
from pathlib import Path

import pytest
import torch
from PIL import Image

from prunerlib import images
from prunerlib.errors import DataError
from prunerlib.images import find_layout, load_catsdogs


def photo(path: Path, colour=(200, 30, 30), mode: str = "RGB", fmt: str = "JPEG", size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, colour).convert(mode)
    img.save(path, fmt)
    return path


def truncated(path: Path) -> Path:
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(buf, "JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


def dirty_class(folder: Path, name: str, good: int) -> None:
    """`good` decodable photos of several kinds, plus the PetImages release's junk."""
    kinds = [("RGB", "JPEG", ".jpg"), ("L", "JPEG", ".jpg"), ("CMYK", "JPEG", ".jpg"), ("RGBA", "PNG", ".png")]
    for i in range(good):
        mode, fmt, ext = kinds[i % len(kinds)]
        photo(folder / f"{name}{i}{ext}", mode=mode, fmt=fmt)
    (folder / "empty.jpg").write_bytes(b"")
    truncated(folder / "cut.jpg")
    (folder / "Thumbs.db").write_bytes(b"\x00\x01 not an image" * 20)


def test_the_shared_photos_give_the_papers_split_as_rgb_32x32(catsdogs_dir, tmp_path):
    train, test = load_catsdogs(catsdogs_dir, cache_dir=tmp_path)
    assert train.images.shape == (2000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (400, 3, 32, 32)
    assert train.labels.bincount().tolist() == [1000, 1000] and test.labels.bincount().tolist() == [200, 200]
    assert train.skipped == {} and test.skipped == {}
    assert 40 < train.images.float().mean() < 200  # real photos, not black or saturated frames


def test_decoded_images_are_cached_and_reused_without_decoding(catsdogs_dir, tmp_path, monkeypatch):
    first, _ = load_catsdogs(catsdogs_dir, train_per_class=30, test_per_class=10, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 1

    def no_decoding(*_):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(images, "decode", no_decoding)
    again, _ = load_catsdogs(catsdogs_dir, train_per_class=30, test_per_class=10, cache_dir=tmp_path)
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)


def test_subsets_are_chosen_by_seed(catsdogs_dir, tmp_path):
    a, _ = load_catsdogs(catsdogs_dir, train_per_class=20, test_per_class=5, seed=0, cache_dir=tmp_path)
    b, _ = load_catsdogs(catsdogs_dir, train_per_class=20, test_per_class=5, seed=0, cache_dir=tmp_path / "x")
    c, _ = load_catsdogs(catsdogs_dir, train_per_class=20, test_per_class=5, seed=1, cache_dir=tmp_path)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)


def test_dirty_folders_are_skipped_counted_and_reported(tmp_path, caplog):
    root = tmp_path / "PetImages"  # Microsoft's release: PetImages/Cat, PetImages/Dog, no test split
    dirty_class(root / "Cat", "c", good=8)
    dirty_class(root / "Dog", "d", good=8)
    with caplog.at_level(logging.WARNING, logger="prunerlib.images"):
        train, test = load_catsdogs(tmp_path, train_per_class=100, test_per_class=2, cache_dir=tmp_path / "cache")
    # 8 decodable photos a class, fewer than 100 + 2: split in proportion, at least one to test.
    assert test.labels.bincount().tolist() == [1, 1]
    assert train.labels.bincount().tolist() == [7, 7]
    skipped = {Path(k).name: v for part in (train, test) for k, v in part.skipped.items()}
    assert sum(train.skipped.values()) + sum(test.skipped.values()) == 6 and set(skipped) == {"Cat", "Dog"}
    assert "3 undecodable" in caplog.text or "1 undecodable" in caplog.text
    assert "PetImages/Cat" in caplog.text and "PetImages/Dog" in caplog.text


def test_greyscale_cmyk_and_png_become_rgb_with_their_colours(tmp_path):
    red = (200, 30, 30)
    for mode, fmt in (("RGB", "JPEG"), ("CMYK", "JPEG"), ("RGBA", "PNG")):
        image = images.decode(photo(tmp_path / f"x.{mode}", red, mode, fmt), 32)
        assert image.shape == (3, 32, 32)
        assert (image.float().mean((1, 2)) - torch.tensor(red)).abs().max() < 12, (mode, image.float().mean((1, 2)))
    grey = images.decode(photo(tmp_path / "g.jpg", red, "L"), 32).float()
    assert grey.shape == (3, 32, 32) and (grey[0] - grey[1]).abs().max() < 2  # all channels equal


@pytest.mark.parametrize("layout, train_per_class", [
    ({"train/cats": 3, "train/dogs": 3, "test/cats": 2, "test/dogs": 2}, 3),
    ({"Train/Cat": 3, "Train/DOG": 3, "Validation/cat": 2, "Validation/dogs": 2}, 3),
    ({"cats": 6, "dogs": 6}, 4),  # no test split: 2 per class are held out by seed
    ({"flat": 6}, 4),
    ({"train/flat": 4, "test/flat": 2}, 4),
])
def test_every_listed_layout_is_read(tmp_path, layout, train_per_class):
    root = tmp_path / "data"
    for folder, count in layout.items():
        for i in range(count):
            if folder.endswith("flat"):
                base = root / folder.removesuffix("flat")
                photo(base / f"cat.{i}.jpg")
                photo(base / f"dog.{i}.jpg", (20, 20, 200))
            else:
                photo(root / folder / f"{i}.jpg")
    train, test = load_catsdogs(root, train_per_class=train_per_class, test_per_class=2,
                                cache_dir=tmp_path / "cache")
    assert test.labels.bincount().tolist() == [2, 2]
    assert train.labels.bincount().tolist() == [train_per_class, train_per_class]
    if "flat" in layout:  # the label comes from the filename: dogs are the blue ones
        assert train.images[train.labels == 1, 2].float().mean() > train.images[train.labels == 1, 0].float().mean()


def test_a_folder_with_no_usable_dog_is_a_clear_error(tmp_path):
    photo(tmp_path / "cats" / "a.jpg")
    photo(tmp_path / "cats" / "b.jpg")
    (tmp_path / "dogs").mkdir()
    (tmp_path / "dogs" / "broken.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="no usable dog image: every file in .*dogs is undecodable"):
        load_catsdogs(tmp_path, test_per_class=1, cache_dir=tmp_path / "cache")


def test_too_few_images_for_a_test_split_is_a_clear_error(tmp_path):
    for cls in ("cats", "dogs"):
        photo(tmp_path / cls / "only.jpg")
    with pytest.raises(DataError, match="only 1 usable cat image.*cats: at least 2"):
        load_catsdogs(tmp_path, test_per_class=1, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("usable, expected", [(2, (1, 1)), (5, (4, 1)), (30, (25, 5)), (60, (50, 10))])
def test_a_small_folder_is_split_in_proportion(tmp_path, caplog, usable, expected):
    # 50 + 10 asked for: the test share is 10 / 60, and each side gets at least one image.
    for cls in ("cats", "dogs"):
        for i in range(usable):
            photo(tmp_path / cls / f"{i}.jpg", colour=(i * 4, 30 if cls == "cats" else 120, 30))
    with caplog.at_level(logging.WARNING, logger="prunerlib.images"):
        train, test = load_catsdogs(tmp_path, train_per_class=50, test_per_class=10, cache_dir=tmp_path / "cache")
    assert (train.labels.bincount().tolist(), test.labels.bincount().tolist()) == ([expected[0]] * 2, [expected[1]] * 2)
    if usable < 60:
        assert f"{expected[0]} to train and {expected[1]} to test" in caplog.text
    # No photo is in both parts.
    assert not {bytes(t.numpy()) for t in train.images} & {bytes(t.numpy()) for t in test.images}


def test_an_unrecognisable_folder_says_what_layout_is_expected(tmp_path):
    (tmp_path / "pictures").mkdir()
    (tmp_path / "other").mkdir()
    with pytest.raises(DataError, match="no recognisable Dogs vs. Cats layout"):
        find_layout(tmp_path)


def test_cache_files_follow_the_umask_not_mkstemps_0600(tmp_path):
    for cls in ("cats", "dogs"):
        for i in range(3):
            photo(tmp_path / "data" / cls / f"{i}.jpg")
    old = os.umask(0o022)
    try:
        load_catsdogs(tmp_path / "data", train_per_class=2, test_per_class=1, cache_dir=tmp_path / "cache")
    finally:
        os.umask(old)
    (cached,) = (tmp_path / "cache").glob("*.pt")
    assert stat.S_IMODE(cached.stat().st_mode) == 0o644
