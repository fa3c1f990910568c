"""Dogs vs. Cats photos from disk (SPEC §2): find the layout, decode, subset, cache.

A user's copy of the data comes in several layouts and with real-world dirt (zero-byte files,
truncated JPEGs, greyscale/CMYK images, `Thumbs.db`). Every decodable image becomes RGB
`size`×`size`; an undecodable file is skipped and counted. Decoding a few thousand JPEGs
costs seconds per trial, so the decoded uint8 tensors are cached on disk, keyed by the
file list and the preprocessing settings, and every later trial on the machine reuses them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from prunerlib.errors import DataError
from prunerlib.files import atomic_write

log = logging.getLogger("prunerlib.images")

CLASSES = ("cat", "dog")  # label = index
_CLASS_DIRS = {"cat": 0, "cats": 0, "dog": 1, "dogs": 1}
_TRAIN_DIRS = {"train", "training"}
_TEST_DIRS = {"test", "testing", "validation", "val", "valid"}
_CACHE_VERSION = 2  # bump when decoding, resizing or splitting changes what a cached tensor holds


@dataclass
class ImageSet:
    images: torch.Tensor  # uint8, (N, 3, size, size)
    labels: torch.Tensor  # int64, 0 = cat, 1 = dog
    skipped: dict[str, int] = field(default_factory=dict)  # folder -> undecodable files met
    fingerprint: str = ""  # the folder's files, sizes and times (folder_fingerprint); not cached


def default_cache_dir() -> Path:
    return Path(os.environ.get("PRUNERLIB_CACHE", Path.home() / ".cache" / "prunerlib")) / "images"


def load_catsdogs(root: str | Path, *, size: int = 32, train_per_class: int = 1000, test_per_class: int = 200,
                  seed: int = 0, cache_dir: str | Path | None = None) -> tuple[ImageSet, ImageSet]:
    """(train, test): up to `train_per_class` / `test_per_class` images per class, chosen by
    `seed` when the folder holds more. Without a test split, a seeded stratified one is made."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data: {root} does not exist or is not a folder")
    train_files, test_files = find_layout(root)
    fingerprint = folder_fingerprint(root, train_files, test_files)
    key = _digest([fingerprint, size, train_per_class, test_per_class, seed])
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cached = cache / f"{key}.pt"
    loaded = _load_cached(cached)
    if loaded is None:
        train, test = _decode_split(train_files, test_files, size, train_per_class, test_per_class, seed)
        _save(cached, {"train": vars(train), "test": vars(test)})
    else:
        train, test = loaded
    train.fingerprint = test.fingerprint = fingerprint
    for folder, count in {**train.skipped, **test.skipped}.items():
        log.warning("skipped %d undecodable file(s) in %s", count, folder)
    return train, test


def _load_cached(path: Path) -> tuple[ImageSet, ImageSet] | None:
    """The cached (train, test), or None to decode. The cache only saves time: an entry that
    does not load (truncated by a full disk or a killed writer) is removed and rebuilt."""
    try:
        if not path.is_file():
            return None
        saved = torch.load(path, weights_only=True)
        return ImageSet(**saved["train"]), ImageSet(**saved["test"])
    except Exception as exc:  # noqa: BLE001  whatever a damaged file raises, decoding repairs it
        log.warning("decoded-image cache %s is unreadable (%s): decoding the photos again",
                    path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        try:
            path.unlink()
        except OSError:
            pass
        return None


Labelled = dict[int, list[Path]]  # label -> files


def find_layout(root: Path) -> tuple[Labelled, Labelled | None]:
    """(train files, test files or None) per label, from any layout SPEC §2 lists."""
    train_dir = _child(root, _TRAIN_DIRS)
    if train_dir is not None:
        test_dir = _child(root, _TEST_DIRS)
        train = _labelled(train_dir)
        test = _labelled(test_dir) if test_dir is not None else None
        if train and (test is None or test):
            return train, test
    labelled = _labelled(root)
    if labelled:
        return labelled, None
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subdirs) == 1:  # an archive unpacked into one folder, e.g. PetImages/
        return find_layout(subdirs[0])
    raise DataError(
        f"data: {root} has no recognisable Dogs vs. Cats layout: expected cats/ and dogs/ folders "
        f"(optionally under train/ and test/), or files named cat.N.jpg / dog.N.jpg"
    )


def _child(folder: Path, names: set[str]) -> Path | None:
    return next((p for p in sorted(folder.iterdir()) if p.is_dir() and p.name.lower() in names), None)


def _labelled(folder: Path) -> Labelled:
    """Class folders (cats/, Dog/, ...) or, failing that, Kaggle's flat cat.N.jpg names."""
    files: Labelled = {}
    for sub in sorted(folder.iterdir()):
        label = _CLASS_DIRS.get(sub.name.lower())
        if label is not None and sub.is_dir():
            files.setdefault(label, []).extend(_files(sub))
    if not files:
        for path in _files(folder):
            label = _CLASS_DIRS.get(path.name.split(".")[0].lower()) if path.name.count(".") >= 2 else None
            if label is not None:
                files.setdefault(label, []).append(path)
    return files


def _files(folder: Path) -> list[Path]:
    # Every visible file is a candidate: a non-image (Thumbs.db) is skipped and counted like
    # any undecodable one, so the user learns the folder holds it.
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _decode_split(train_files: Labelled, test_files: Labelled | None, size: int, train_per_class: int,
                  test_per_class: int, seed: int) -> tuple[ImageSet, ImageSet]:
    rng = np.random.default_rng(seed)
    shuffled = lambda files: [files[i] for i in rng.permutation(len(files))]  # noqa: E731
    train: dict[int, list[torch.Tensor]] = {}
    test: dict[int, list[torch.Tensor]] = {}
    skipped_train: dict[str, int] = {}
    skipped_test: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for label, name in enumerate(CLASSES):
            pool_files = shuffled(train_files.get(label, []))
            own_test = test_files.get(label, []) if test_files is not None else []
            if test_files is None:  # seeded stratified test split: the first images of the shuffled pool
                found, _ = _take(pool_files, train_per_class + test_per_class, size, pool, skipped_train)
                cut = _test_share(len(found), train_per_class, test_per_class)
                test[label], train[label] = found[:cut], found[cut:]
            else:
                test[label], _ = _take(shuffled(own_test), test_per_class, size, pool, skipped_test)
                train[label], _ = _take(pool_files, train_per_class, size, pool, skipped_train)
            usable = len(train[label]) + len(test[label])
            if usable == 0:
                folders = sorted({str(p.parent) for p in train_files.get(label, []) + own_test})
                where = f"every file in {', '.join(folders)} is undecodable" if folders else "no file found"
                raise DataError(f"data: no usable {name} image: {where}")
            if not train[label] or not test[label]:
                folders = ", ".join(sorted({str(p.parent) for p in train_files.get(label, []) + own_test}))
                need = "one training and one test image" if test_files is not None else "at least 2"
                raise DataError(f"data: only {usable} usable {name} image(s) in {folders}: {need} needed "
                                f"for a training and a test part")
            if test_files is None and len(test[label]) < test_per_class:
                log.warning("data: only %d usable %s images, fewer than %d + %d: split in proportion, "
                            "%d to train and %d to test", usable, name, train_per_class, test_per_class,
                            len(train[label]), len(test[label]))
    return _image_set(train, skipped_train), _image_set(test, skipped_test)


def _test_share(usable: int, train_per_class: int, test_per_class: int) -> int:
    """How many of `usable` images test: `test_per_class` when there are enough for both parts,
    else the same share of what there is, with at least one image on each side."""
    if usable >= train_per_class + test_per_class:
        return test_per_class
    if usable < 2:
        return usable  # refused by the caller: one image cannot both train and test
    return min(max(round(usable * test_per_class / (train_per_class + test_per_class)), 1), usable - 1)


def _take(files: list[Path], need: int, size: int, pool: ThreadPoolExecutor,
          skipped: dict[str, int]) -> tuple[list[torch.Tensor], int]:
    """Decode files in order until `need` images decoded; count the ones that fail.
    Returns the images and how many files were consumed."""
    found: list[torch.Tensor] = []
    pos = 0
    while len(found) < need and pos < len(files):
        chunk = files[pos: pos + need - len(found)]
        pos += len(chunk)
        for path, image in zip(chunk, pool.map(lambda p: decode(p, size), chunk)):
            if image is None:
                skipped[str(path.parent)] = skipped.get(str(path.parent), 0) + 1
            else:
                found.append(image)
    return found, pos


def decode(path: Path, size: int) -> torch.Tensor | None:
    """RGB uint8 (3, size, size), or None when the file is not a decodable image.

    Pillow decodes (torchvision.io's decoders are deprecated since 0.29 and reject BMP and
    CMYK quirks Pillow handles); torchvision resizes, with antialiasing."""
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size * 4, size * 4))  # JPEG: let libjpeg downscale while decoding
            rgb = img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    tensor = TF.pil_to_tensor(rgb)
    return TF.resize(tensor, [size, size], antialias=True)


def _image_set(per_label: dict[int, list[torch.Tensor]], skipped: dict[str, int]) -> ImageSet:
    images = [img for label in sorted(per_label) for img in per_label[label]]
    labels = [label for label in sorted(per_label) for _ in per_label[label]]
    return ImageSet(torch.stack(images), torch.tensor(labels, dtype=torch.int64), dict(skipped))


def folder_fingerprint(root: Path, train: Labelled, test: Labelled | None) -> str:
    """What the photos are: every file's name, size and mtime, and the decoding version. A
    file replaced, added or removed changes it; hashing the bytes of thousands of JPEGs each
    trial would cost what the cache saves."""
    def listing(files: Labelled | None) -> list[list]:
        if files is None:
            return []
        return [[label, str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns]
                for label in sorted(files) for p in files[label]]

    return f"files:{_digest([_CACHE_VERSION, listing(train), listing(test)])}"


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()[:20]


_unwritable: set[Path] = set()  # cache folders already warned about, one warning each


def _save(path: Path, obj: dict) -> None:
    """Write to a temporary name, then rename: a concurrent trial never reads half a cache.
    A cache that cannot be written is skipped: the decoded images are in memory already."""
    obj = {part: {k: v for k, v in fields.items() if k != "fingerprint"} for part, fields in obj.items()}
    try:
        atomic_write(path, lambda tmp: torch.save(obj, tmp))
    except OSError as exc:
        if path.parent not in _unwritable:
            _unwritable.add(path.parent)
            log.warning("decoded-image cache %s is not writable (%s): decoding in memory each trial; "
                        "set PRUNERLIB_CACHE to a writable folder", path.parent, exc.strerror or exc)
