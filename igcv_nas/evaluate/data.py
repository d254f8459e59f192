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

Checked on load, each failure a one-line :class:`DataError` naming the file: every CIFAR file is
a regular file of at most ``MAX_BATCH_BYTES``, unpickled with only numpy's array classes allowed
(a pickle cannot run code here), and holds what the format says (a dict with ``data`` uint8
(N, 3072) and N integer labels in the class range; the meta file the 10 / 100 class names). An
image is refused from its header when it has more than ``MAX_IMAGE_PIXELS`` pixels
(decompression bombs), and any file Pillow cannot read is named.

Honest splits: :func:`make_splits` holds a validation set out of the training set with a fixed
seed; search scores come from it, the test set is only for final training and reporting.
"""
from __future__ import annotations

import hashlib
import io
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

from ..errors import IGCVError
from ..units import MAX_BATCH_BYTES, MAX_IMAGE_PIXELS, MAX_INPUT_SIZE, read_bounded, show


class DataError(IGCVError, RuntimeError):
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

# what the official CIFAR pickles (and numpy's own pickles of arrays) reference; nothing else
# may be loaded, so a crafted batch file cannot run code
_PICKLE_GLOBALS = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
                   ("numpy.core.multiarray", "_reconstruct"),
                   ("numpy._core.multiarray", "_reconstruct"),
                   ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refers to {module}.{name}; accepted: numpy arrays, "
                                         "lists, dicts, strings and numbers only")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    raw = read_bounded(path, MAX_BATCH_BYTES, "CIFAR batch file", DataError)
    try:
        d = _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as e:  # noqa: BLE001 -- a corrupt pickle can raise almost anything
        msg = " ".join(str(e).split())[:200]
        raise DataError(f"cannot read {path}: not a CIFAR python pickle ({type(e).__name__}: "
                        f"{msg})") from None
    if not isinstance(d, dict):
        raise DataError(f"cannot read {path}: expected a pickled dict, got {type(d).__name__}")
    return d


def _check_batch(b: dict, path: Path, key: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(data (N, 3072) uint8, labels (N,) int64) of one CIFAR batch, or DataError naming the
    file."""
    for k in ("data", key):
        if k not in b:
            raise DataError(f"{path}: no {k!r} entry (has {show(sorted(map(str, b)))}); accepted: "
                            f"a CIFAR batch with 'data' and {key!r}")
    x = b["data"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        what = (f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray)
                else type(x).__name__)
        raise DataError(f"{path}: 'data' is a {what}; accepted: a uint8 array of shape (N, 3072) "
                        "(N 32x32 RGB images, channel planes)")
    labels = b[key]
    if not isinstance(labels, (list, tuple, np.ndarray)):
        raise DataError(f"{path}: {key!r} is a {type(labels).__name__}; accepted: a list of N "
                        "integer labels")
    try:
        y = np.asarray(labels)
    except (ValueError, TypeError):
        y = np.asarray([], dtype=object)
    if y.ndim != 1 or (len(y) and y.dtype.kind not in "iu"):
        raise DataError(f"{path}: {key!r} is not a flat list of integers ({y.dtype}, shape "
                        f"{y.shape}); accepted: N integer labels")
    if len(y) != len(x):
        raise DataError(f"{path}: {len(y):,} labels for {len(x):,} images; accepted: one label "
                        "per image")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        bad = int(y[(y < 0) | (y >= n_classes)][0])
        raise DataError(f"{path}: label {bad} is outside the class range; accepted: 0.."
                        f"{n_classes - 1}")
    return x, y.astype(np.int64)


def _class_names(meta: dict, path: Path, key: str, n: int) -> tuple[str, ...]:
    names = meta.get(key)
    if (not isinstance(names, (list, tuple)) or len(names) != n
            or not all(isinstance(c, (str, bytes)) for c in names)):
        raise DataError(f"{path}: {key!r} is {show(names)}; accepted: a list of {n} class names")
    return tuple(c.decode("latin1") if isinstance(c, bytes) else c for c in names)


def _complete(folder: Path, name: str) -> bool:
    # exists, not is_file: a FIFO or directory in its place is then named by the read, not
    # mistaken for missing data
    return all((folder / f).exists() for f in _FILES[name])


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
        raise DataError(f"data directory {data_dir} cannot be created ({e.strerror}); "
                        f"{how}") from None
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
            raise DataError(f"archive {url} does not contain {arc.folder}/ with "
                            f"{', '.join(_FILES[name])}")
        dest = data_dir / arc.folder
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(src, dest)
    return dest


def load_cifar(name: str, data_dir: str | os.PathLike | None = None, download_ok: bool = True,
               ) -> tuple[Dataset, Dataset]:
    """(train, test) of ``cifar10`` or ``cifar100`` from the standard python layout."""
    if name not in ARCHIVES:
        raise DataError(f"unknown data set {name!r}; "
                        "accepted: cifar10, cifar100 or an image folder path")
    root = resolve_data_dir(data_dir)
    folder = root / ARCHIVES[name].folder
    if not _complete(folder, name):
        if not download_ok:
            raise DataError(f"{name} is not in {root} (expected {folder}/ with "
                            f"{', '.join(_FILES[name])}); pass --data-dir or set IGCV_DATA_DIR")
        folder = download(name, root)
    if name == "cifar10":
        meta_file, names_key, n_classes, key = "batches.meta", "label_names", 10, "labels"
        train_files, test_file = [f"data_batch_{i}" for i in range(1, 6)], "test_batch"
    else:
        meta_file, names_key, n_classes, key = "meta", "fine_label_names", 100, "fine_labels"
        train_files, test_file = ["train"], "test"
    classes = _class_names(_unpickle(folder / meta_file), folder / meta_file, names_key, n_classes)

    def to_ds(files: list[str], split: str) -> Dataset:
        xs, ys = [], []
        for f in files:  # one file at a time: checked, then only its arrays kept
            x, y = _check_batch(_unpickle(folder / f), folder / f, key, n_classes)
            xs.append(x)
            ys.append(y)
        x, y = np.concatenate(xs), np.concatenate(ys)
        return Dataset(f"{name}-{split}", x.reshape(-1, 3, 32, 32), y, classes)

    return to_ds(train_files, "train"), to_ds([test_file], "test")


# ---------------------------------------------------------------------------------------------
# image folders

_IMG_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".gif", ".tif", ".tiff"}


def load_image_folder(root: str | os.PathLike, resolution: int,
                      classes: tuple[str, ...] | None = None) -> Dataset:
    """Every image under ``root/<class>/`` resized (bilinear, whole image) to ``resolution``.
    DataError naming the file for anything that is not a readable image of at most
    MAX_IMAGE_PIXELS pixels (checked from the header, before decoding)."""
    import warnings

    from PIL import Image

    if isinstance(resolution, bool) or not isinstance(resolution, int) or not (
            1 <= resolution <= MAX_INPUT_SIZE):
        raise DataError(f"resolution {show(resolution)} is not accepted; expected an integer in "
                        f"1..{MAX_INPUT_SIZE:,}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    found = tuple(sorted(d.name for d in root.iterdir()
                         if d.is_dir() and not d.name.startswith(".")))
    classes = classes or found
    if not classes:
        raise DataError(f"image folder {root} has no class sub-folders "
                        f"(expected {root}/<class>/<image>)")
    xs, ys = [], []
    for label, cls in enumerate(classes):
        d = root / cls
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            if f.suffix.lower() not in _IMG_EXT:
                continue
            if not f.is_file():  # a FIFO would block Image.open, a device never end
                raise DataError(f"cannot read image {f}: not a regular file")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    with Image.open(f) as im:
                        w, h = im.size
                        if w * h > MAX_IMAGE_PIXELS:
                            raise DataError(f"cannot read image {f}: {w}x{h} = {w * h:,} pixels; "
                                            f"accepted: at most {MAX_IMAGE_PIXELS:,} "
                                            "(a decompression bomb?)")
                        im = im.convert("RGB").resize((resolution, resolution), Image.BILINEAR)
                        xs.append(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))
            except DataError:
                raise
            except Exception as e:  # noqa: BLE001 -- Pillow raises OSError, ValueError,
                # SyntaxError, DecompressionBombError ... for broken or hostile files
                msg = " ".join(str(e).split())[:200]
                raise DataError(f"cannot read image {f}: {type(e).__name__}: {msg}") from None
            ys.append(label)
    if not xs:
        raise DataError(f"image folder {root} has no images ({', '.join(sorted(_IMG_EXT))})")
    return Dataset(root.name, np.stack(xs), np.asarray(ys, dtype=np.int64), classes)


# ---------------------------------------------------------------------------------------------
# splits

def make_splits(train: Dataset, test: Dataset, val_size: int | float = 0.1, seed: int = 0,
                mean_std: tuple | None = None) -> Splits:
    """Hold ``val_size`` images (a count, or a fraction of ``train``) out of the training set,
    class-stratified, chosen by ``seed``. The test set is passed through untouched.

    Args:
        train: the training set to split.
        test: the test set (kept as it is).
        val_size: validation images: a count (int) or a fraction of ``train`` (float).
        seed: the seed of the choice of validation images.
        mean_std: per-channel ``(mean, std)`` of the inputs (in [0, 1]); None: computed from up
            to 10,000 images of the training split.

    Returns:
        The :class:`Splits`: training split (``<name>-train``), validation split
        (``<name>-val``), ``test`` and the normalisation mean and std.

    Raises:
        DataError: ``val_size`` would leave no image in the training or the validation split."""
    n = len(train)
    k = int(round(val_size * n)) if isinstance(val_size, float) else int(val_size)
    if not 0 < k < n:
        raise DataError(f"validation size {val_size} must leave images in both splits "
                        f"(train has {n})")
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


def load_splits(dataset: str, data_dir: str | os.PathLike | None = None,
                val_size: int | float = 5000, seed: int = 0, resolution: int = 32,
                download_ok: bool = True) -> Splits:
    """Train/val/test for ``cifar10``, ``cifar100`` or an image-folder path.

    An image folder with ``train/`` and ``test/`` (or ``val/``) sub-folders is split as it is;
    any other folder of class sub-folders gives a tenth of its images (chosen by ``seed``) to
    the test set.

    Args:
        dataset: ``cifar10``, ``cifar100`` or the path of an image folder.
        data_dir: where the CIFAR archives are (and are downloaded to); None: the default
            data directory (:func:`resolve_data_dir`).
        val_size: validation images held out of the training set (a count, or a fraction);
            for an image folder, a count at least its training set's size becomes a tenth.
        seed: the seed of the validation (and image-folder test) choice.
        resolution: the image size; CIFAR only accepts 32.
        download_ok: whether a missing CIFAR data set may be downloaded.

    Returns:
        The :class:`Splits` (:func:`make_splits`).

    Raises:
        DataError: ``dataset`` is neither a CIFAR name nor a folder; a CIFAR data set at a
            resolution other than 32, missing (and not to be downloaded), failing to download
            or unreadable; an image folder without classes or images, or with an unreadable
            image; a ``val_size`` that leaves a split empty."""
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
        test = load_image_folder(root / ("test" if "test" in sub else "val"), resolution,
                                 train.classes)
    else:
        full = load_image_folder(root, resolution)
        rng = np.random.default_rng(seed + 1)
        order = rng.permutation(len(full))
        n_test = max(1, len(full) // 10)
        test, train = full.subset(np.sort(order[:n_test])), full.subset(np.sort(order[n_test:]))
    if isinstance(val_size, int) and val_size >= len(train):
        val_size = 0.1
    return make_splits(train, test, val_size, seed)
