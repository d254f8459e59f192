"""igcv-train: final training with checkpoint/resume, test accuracy, weights for igcv-export."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch

from igcv_nas.cli.export import main as export_main
from igcv_nas.cli.train import main

NET = "igcv3_d_0.25_cifar"
QUICK = ["--epochs", "2", "--train-fraction", "0.01", "--batch-size", "64", "--warmup-epochs", "0.5",
         "--val-size", "500",
         "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cifar_dir):
    d = tmp_path_factory.mktemp("train") / "full"
    assert main([NET, *QUICK, "--data-dir", str(cifar_dir), "--out", str(d)]) == 0
    return d


def test_outputs_of_a_training(trained):
    r = json.loads((trained / "result.json").read_text())
    assert r["epochs"] == 2 and 0.0 <= r["test_acc"] <= 1.0 and 0.0 <= r["val_acc"] <= 1.0
    assert r["train_images"] == 450  # 1% of the 45,000-image training split
    assert r["recipe"]["lr"] == 0.1 and r["recipe"]["nesterov"] and r["recipe"]["label_smoothing"] == 0.1
    hist = (trained / "history.csv").read_text().splitlines()
    assert hist[0] == "epoch,steps,train_loss,val_acc,seconds" and len(hist) == 3
    w = torch.load(trained / "weights.pt", weights_only=True)
    assert w["trained"] is True and w["arch_id"] == r["arch_id"]


def test_resume_after_a_kill_ends_like_an_uninterrupted_run(trained, tmp_path, cifar_dir):
    d = tmp_path / "resumed"
    cmd = [sys.executable, "-m", "igcv_nas.cli.train", NET, *QUICK, "--data-dir", str(cifar_dir),
           "--out", str(d)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (d / "history.csv").is_file():
        time.sleep(0.2)
    p.kill()
    p.wait()
    assert (d / "checkpoint.pt").is_file()
    assert main([NET, *QUICK, "--data-dir", str(cifar_dir), "--out", str(d), "--resume"]) == 0
    a = torch.load(trained / "weights.pt", weights_only=True)["state_dict"]
    b = torch.load(d / "weights.pt", weights_only=True)["state_dict"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    ra, rb = (json.loads((x / "result.json").read_text()) for x in (trained, d))
    assert ra["test_acc"] == rb["test_acc"]


def test_trained_weights_export_and_verify(trained, tmp_path):
    out = tmp_path / "exp"
    assert export_main([str(trained / "spec.json"), "--weights", str(trained / "weights.pt"), "--out", str(out)]) == 0
    (d,) = list(out.iterdir())
    assert json.loads((d / "verify.json").read_text())["ok"]
    assert torch.load(d / "weights.pt", weights_only=True)["trained"] is True


def test_bad_input(trained, tmp_path, capsys, cifar_dir):
    assert main([NET, "--epochs", "0", "--out", str(tmp_path / "a")]) == 2
    assert "--epochs 0; accepted: an integer >= 1" in capsys.readouterr().err
    assert main([NET, *QUICK, "--data-dir", str(cifar_dir), "--out", str(trained)]) == 2
    assert "exists and is not empty; continue it with --resume" in capsys.readouterr().err
    assert main([NET, "--resume", "--out", str(tmp_path / "b")]) == 2
    assert "checkpoint.pt does not exist" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
