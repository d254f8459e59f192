from __future__ import annotations

import hashlib
import http.server
import io
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from igcv_nas.evaluate import data
from igcv_nas.evaluate.data import DataError, download, load_cifar, load_splits, make_splits


@pytest.mark.integration
def test_reads_the_standard_cifar10_layout(cifar_dir):
    train, test = load_cifar("cifar10", cifar_dir, download_ok=False)
    assert train.x.shape == (50000, 3, 32, 32) and train.x.dtype == np.uint8
    assert test.x.shape == (10000, 3, 32, 32)
    assert train.classes == ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                             "horse", "ship", "truck")
    assert np.bincount(train.y).tolist() == [5000] * 10
    assert np.bincount(test.y).tolist() == [1000] * 10


@pytest.mark.integration
def test_validation_split_is_held_out_stratified_and_fixed_by_seed(cifar_dir):
    a = load_splits("cifar10", cifar_dir, val_size=5000, seed=3, download_ok=False)
    b = load_splits("cifar10", cifar_dir, val_size=5000, seed=3, download_ok=False)
    c = load_splits("cifar10", cifar_dir, val_size=5000, seed=4, download_ok=False)
    assert (len(a.train), len(a.val), len(a.test)) == (45000, 5000, 10000)
    assert np.bincount(a.val.y).tolist() == [500] * 10
    assert np.array_equal(a.val.x, b.val.x) and not np.array_equal(a.val.x, c.val.x)
    # no validation image is in the training split: compare raw bytes of every image
    train_keys = {bytes(r) for r in a.train.x.reshape(len(a.train), -1)}
    assert not any(bytes(r) in train_keys for r in a.val.x.reshape(len(a.val), -1)[:500])


def test_missing_data_without_download_names_the_directory(tmp_path):
    with pytest.raises(DataError, match=f"cifar10 is not in {tmp_path}") as e:
        load_cifar("cifar10", tmp_path, download_ok=False)
    assert "IGCV_DATA_DIR" in str(e.value)


def _fake_archive(tmp_path: Path) -> bytes:
    """A tiny archive in the official cifar-10-python.tar.gz layout (10 images per batch)."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        def add(name, obj):
            raw = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
        for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            add(n, {"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8),
                    "labels": list(range(10)), "batch_label": n})
        add("batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    return buf.getvalue()


@pytest.fixture
def http_archive(tmp_path):
    """Serve the fake archive from a real HTTP server on loopback."""
    payload = _fake_archive(tmp_path)

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/cifar-10-python.tar.gz":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{srv.server_port}/cifar-10-python.tar.gz"
    yield url, hashlib.md5(payload).hexdigest()
    srv.shutdown()


def test_download_checks_md5_and_unpacks_atomically(tmp_path, http_archive):
    url, md5 = http_archive
    dest = download("cifar10", tmp_path / "d", url=url, md5=md5)
    assert dest == tmp_path / "d" / "cifar-10-batches-py"
    train, test = load_cifar("cifar10", tmp_path / "d", download_ok=False)
    assert len(train) == 50 and len(test) == 10 and train.classes[3] == "c3"
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["cifar-10-batches-py"]


def test_download_with_wrong_md5_leaves_nothing(tmp_path, http_archive):
    url, _ = http_archive
    with pytest.raises(DataError, match="has MD5 .* expected 0000"):
        download("cifar10", tmp_path / "d", url=url, md5="0" * 32)
    assert list((tmp_path / "d").iterdir()) == []


def test_download_failure_is_one_line_with_how_to_fix(tmp_path, http_archive):
    url, md5 = http_archive
    with pytest.raises(DataError) as e:
        download("cifar10", tmp_path / "d", url=url.replace(".tar.gz", ".missing"), md5=md5)
    msg = str(e.value)
    assert "\n" not in msg and "downloading" in msg and "--data-dir" in msg


def test_official_archives_are_the_published_ones():
    assert data.ARCHIVES["cifar10"].md5 == "c58f30108f718f92721af3b95e74349a"
    assert data.ARCHIVES["cifar100"].md5 == "eb9058c3a382ffc7106e4002c42a8d85"


def test_image_folder_is_resized_and_labelled_by_sorted_class_names(tmp_path):
    from PIL import Image
    for cls, colour in (("dogs", (255, 0, 0)), ("cats", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for i in range(12):
            Image.new("RGB", (50 + i, 40), colour).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    s = load_splits(str(tmp_path), val_size=0.25, seed=0, resolution=16)
    assert s.train.classes == ("cats", "dogs")
    assert s.train.x.shape[1:] == (3, 16, 16)
    assert len(s.train) + len(s.val) + len(s.test) == 24
    # cats are blue: channel 2 full, channel 0 empty
    cat = s.train.x[s.train.y == 0][0]
    assert cat[2].min() == 255 and cat[0].max() == 0


@pytest.mark.integration
def test_split_sizes_must_leave_both_sides(cifar_dir):
    train, test = load_cifar("cifar10", cifar_dir, download_ok=False)
    with pytest.raises(DataError, match="validation size 50000"):
        make_splits(train, test, 50000)
