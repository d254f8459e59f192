"""Data sets for proxy training: CIFAR-10/100 (standard python layout) and image folders.

Everything is loaded into memory as ``uint8`` arrays ``(N, 3, H, W)`` with ``int64`` labels;
the trainer moves them to its device once. Where the data comes from:

* ``--data-dir`` if given, else the ``IGCV_DATA_DIR`` environment variable, else
  ``~/.cache/igcv-nas/data`` (``$XDG_CACHE_HOME`` respected).
* CIFAR-10 is read from ``<dir>/cifar-10-batches-py`` (``data_batch_1..5``, ``test_batch``,
  ``batches.meta``), CIFAR-100 from ``<dir>/cifar-100-python`` (``train``, ``test``, ``meta``):
  exactly what the official archives unpack to. When the directory lacks them, the official
  archive is downloaded, its MD5 checked and unpacked atomically; when that is impossible a
  :class:`DataError` names the directory and how to provide the data.
* An image folder (``<root>/<class>/<image>``, one sub-folder per class, sorted names = labels)
  is read with Pillow and resized to the requested resolution; if it has ``train/`` and
  ``test/`` (or ``val/``) sub-folders those are the splits.

Honest splits: :func:`make_splits` holds a validation set out of the training set with a fixed
seed; search scores come from it, the test set is only for final training and reporting.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DataError(RuntimeError):
    """The data set cannot be found, downloaded or read (one-line message)."""


@dataclass(frozen=True)
class Archive:
    url: str
    md5: str
    folder: str  # what the archive unpacks to


ARCHIVES = {
    "cifar10": Archive("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                       "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py"),
    "cifar100": Archive("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                        "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python"),
}
_FILES = {"cifar10": [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"],
          "cifar100": ["train", "test", "meta"]}
MEAN_STD = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
            "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))}


@dataclass(frozen=True)
class Dataset:
    """Images ``x`` uint8 (N, 3, H, W), labels ``y`` int64 (N,), class names."""
    name: str
    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def resolution(self) -> int:
        return int(self.x.shape[-1])

    def subset(self, idx: np.ndarray, name: str | None = None) -> Dataset:
        return Dataset(name or self.name, self.x[idx], self.y[idx], self.classes)


@dataclass(frozen=True)
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def num_classes(self) -> int:
        return self.train.num_classes


def default_data_dir() -> Path:
    env = os.environ.get("IGCV_DATA_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "igcv-nas" / "data"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir).expanduser() if data_dir else default_data_dir()


# ---------------------------------------------------------------------------------------------
# CIFAR

def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}") from None


def _complete(folder: Path, name: str) -> bool:
    return all((folder / f).is_file() for f in _FILES[name])


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(name: str, data_dir: Path, url: str | None = None, md5: str | None = None,
             timeout: float = 30.0) -> Path:
    """Download the official archive of ``name`` into ``data_dir``, check its MD5, unpack it.

    Atomic: the archive goes to a temporary file and is unpacked into a temporary folder that is
    renamed into place only when complete, so an interrupted download leaves nothing behind.
    """
    arc = ARCHIVES[name]
    url, md5 = url or arc.url, md5 or arc.md5
    how = (f"put the official {os.path.basename(arc.url)} unpacked ({arc.folder}/) there, or pass "
           "--data-dir / set IGCV_DATA_DIR to a directory that has it")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"data directory {data_dir} cannot be created ({e.strerror}); {how}") from None
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".download-") as tmp:
        archive = Path(tmp) / os.path.basename(url)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(archive, "wb") as f:
                shutil.copyfileobj(r, f, 1 << 20)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            reason = getattr(e, "reason", None) or e
            raise DataError(f"{name} is not in {data_dir} and downloading {url} failed ({reason}); "
                            f"{how}") from None
        got = _md5(archive)
        if got != md5:
            raise DataError(f"downloaded {url} has MD5 {got}, expected {md5}; nothing was written "
                            f"to {data_dir}; {how}")
        unpack = Path(tmp) / "unpacked"
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(unpack, filter="data")
        src = unpack / arc.folder
        if not _complete(src, name):
            raise DataError(f"archive {url} does not contain {arc.folder}/ with {', '.join(_FILES[name])}")
        dest = data_dir / arc.folder
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(src, dest)
    return dest


def load_cifar(name: str, data_dir: str | os.PathLike | None = None, download_ok: bool = True,
               ) -> tuple[Dataset, Dataset]:
    """(train, test) of ``cifar10`` or ``cifar100`` from the standard python layout."""
    if name not in ARCHIVES:
        raise DataError(f"unknown data set {name!r}; accepted: cifar10, cifar100 or an image folder path")
    root = resolve_data_dir(data_dir)
    folder = root / ARCHIVES[name].folder
    if not _complete(folder, name):
        if not download_ok:
            raise DataError(f"{name} is not in {root} (expected {folder}/ with "
                            f"{', '.join(_FILES[name])}); pass --data-dir or set IGCV_DATA_DIR")
        folder = download(name, root)
    if name == "cifar10":
        meta = _unpickle(folder / "batches.meta")
        classes = tuple(meta["label_names"])
        parts = [_unpickle(folder / f"data_batch_{i}") for i in range(1, 6)]
        test = _unpickle(folder / "test_batch")
        key = "labels"
    else:
        meta = _unpickle(folder / "meta")
        classes = tuple(meta["fine_label_names"])
        parts = [_unpickle(folder / "train")]
        test = _unpickle(folder / "test")
        key = "fine_labels"

    def to_ds(batches: list[dict], split: str) -> Dataset:
        x = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
        y = np.concatenate([np.asarray(b[key], dtype=np.int64) for b in batches])
        return Dataset(f"{name}-{split}", x.reshape(-1, 3, 32, 32), y, classes)

    return to_ds(parts, "train"), to_ds([test], "test")


# ---------------------------------------------------------------------------------------------
# image folders

_IMG_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".gif", ".tif", ".tiff"}


def load_image_folder(root: str | os.PathLike, resolution: int, classes: tuple[str, ...] | None = None,
                      ) -> Dataset:
    """Every image under ``root/<class>/`` resized (bilinear, whole image) to ``resolution``."""
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    found = tuple(sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")))
    classes = classes or found
    if not classes:
        raise DataError(f"image folder {root} has no class sub-folders (expected {root}/<class>/<image>)")
    xs, ys = [], []
    for label, cls in enumerate(classes):
        d = root / cls
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            if f.suffix.lower() not in _IMG_EXT:
                continue
            try:
                with Image.open(f) as im:
                    im = im.convert("RGB").resize((resolution, resolution), Image.BILINEAR)
                    xs.append(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))
            except OSError as e:
                raise DataError(f"cannot read image {f}: {e}") from None
            ys.append(label)
    if not xs:
        raise DataError(f"image folder {root} has no images ({', '.join(sorted(_IMG_EXT))})")
    return Dataset(root.name, np.stack(xs), np.asarray(ys, dtype=np.int64), classes)


# ---------------------------------------------------------------------------------------------
# splits

def make_splits(train: Dataset, test: Dataset, val_size: int | float = 0.1, seed: int = 0,
                mean_std: tuple | None = None) -> Splits:
    """Hold ``val_size`` images (a count, or a fraction of ``train``) out of the training set,
    class-stratified, chosen by ``seed``. The test set is passed through untouched."""
    n = len(train)
    k = int(round(val_size * n)) if isinstance(val_size, float) else int(val_size)
    if not 0 < k < n:
        raise DataError(f"validation size {val_size} must leave images in both splits (train has {n})")
    rng = np.random.default_rng(seed)
    val_idx = []
    for c in range(train.num_classes):
        idx = np.flatnonzero(train.y == c)
        take = int(round(k * len(idx) / n))
        val_idx.append(rng.permutation(idx)[:take])
    val = np.sort(np.concatenate(val_idx))
    mask = np.ones(n, dtype=bool)
    mask[val] = False
    tr = train.subset(np.flatnonzero(mask), train.name.replace("-train", "") + "-train")
    va = train.subset(val, train.name.replace("-train", "") + "-val")
    if mean_std is None:
        xf = tr.x[: min(len(tr), 10000)].astype(np.float32) / 255.0
        mean_std = (tuple(float(v) for v in xf.mean(axis=(0, 2, 3))),
                    tuple(float(v) for v in xf.std(axis=(0, 2, 3))))
    return Splits(tr, va, test, mean_std[0], mean_std[1])


def load_splits(dataset: str, data_dir: str | os.PathLike | None = None, val_size: int | float = 5000,
                seed: int = 0, resolution: int = 32, download_ok: bool = True) -> Splits:
    """Train/val/test for ``cifar10``, ``cifar100`` or an image-folder path."""
    if dataset in ARCHIVES:
        train, test = load_cifar(dataset, data_dir, download_ok)
        if resolution != 32:
            raise DataError(f"{dataset} is 32x32; resolution {resolution} is not supported for it")
        return make_splits(train, test, val_size, seed, MEAN_STD[dataset])
    root = Path(dataset)
    if not root.is_dir():
        raise DataError(f"data set {dataset!r} is neither cifar10, cifar100 nor an image folder")
    sub = {d.name for d in root.iterdir() if d.is_dir()}
    if "train" in sub and ({"test", "val"} & sub):
        train = load_image_folder(root / "train", resolution)
        test = load_image_folder(root / ("test" if "test" in sub else "val"), resolution, train.classes)
    else:
        full = load_image_folder(root, resolution)
        rng = np.random.default_rng(seed + 1)
        order = rng.permutation(len(full))
        n_test = max(1, len(full) // 10)
        test, train = full.subset(np.sort(order[:n_test])), full.subset(np.sort(order[n_test:]))
    if isinstance(val_size, int) and val_size >= len(train):
        val_size = 0.1
    return make_splits(train, test, val_size, seed)
