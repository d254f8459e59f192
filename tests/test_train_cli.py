"""igcv-train: final training with checkpoint/resume, test accuracy, weights for igcv-export."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
import torch

from igcv_nas.cli.export import main as export_main
from igcv_nas.cli.train import main

NET = "igcv3_d_0.25_cifar"
QUICK = ["--epochs", "2", "--train-fraction", "0.01", "--batch-size", "64",
         "--warmup-epochs", "0.5", "--val-size", "500",
         "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cifar_dir):
    d = tmp_path_factory.mktemp("train") / "full"
    assert main([NET, *QUICK, "--data-dir", str(cifar_dir), "--out", str(d)]) == 0
    return d


@pytest.mark.integration
def test_outputs_of_a_training(trained):
    r = json.loads((trained / "result.json").read_text())
    assert r["epochs"] == 2 and 0.0 <= r["test_acc"] <= 1.0 and 0.0 <= r["val_acc"] <= 1.0
    assert r["train_images"] == 450  # 1% of the 45,000-image training split
    rec = r["recipe"]
    assert rec["lr"] == 0.1 and rec["nesterov"] and rec["label_smoothing"] == 0.1
    hist = (trained / "history.csv").read_text().splitlines()
    assert hist[0] == "epoch,steps,train_loss,val_acc,seconds" and len(hist) == 3
    w = torch.load(trained / "weights.pt", weights_only=True)
    assert w["trained"] is True and w["arch_id"] == r["arch_id"]


@pytest.mark.integration
def test_resume_after_a_kill_ends_like_an_uninterrupted_run(trained, tmp_path, cifar_dir):
    d = tmp_path / "resumed"
    cmd = [sys.executable, "-m", "igcv_nas.cli.train", NET, *QUICK, "--data-dir", str(cifar_dir),
           "--out", str(d)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    part = tmp_path / "resumed.partial"
    deadline = time.time() + 900
    while time.time() < deadline and not (part / "history.csv").is_file():
        time.sleep(0.2)
    p.kill()
    p.wait()
    assert (part / "checkpoint.pt").is_file() and not d.exists()  # OUT only when it is done
    assert main([NET, *QUICK, "--data-dir", str(cifar_dir), "--out", str(d), "--resume"]) == 0
    assert not part.exists()
    a = torch.load(trained / "weights.pt", weights_only=True)["state_dict"]
    b = torch.load(d / "weights.pt", weights_only=True)["state_dict"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    ra, rb = (json.loads((x / "result.json").read_text()) for x in (trained, d))
    assert ra["test_acc"] == rb["test_acc"]


@pytest.mark.integration
def test_trained_weights_export_and_verify(trained, tmp_path):
    out = tmp_path / "exp"
    argv = [str(trained / "spec.json"), "--weights", str(trained / "weights.pt"),
            "--out", str(out)]
    assert export_main(argv) == 0
    (d,) = list(out.iterdir())
    assert json.loads((d / "verify.json").read_text())["ok"]
    assert torch.load(d / "weights.pt", weights_only=True)["trained"] is True


@pytest.mark.integration
def test_bad_input(trained, tmp_path, capsys, cifar_dir):
    assert main([NET, "--epochs", "0", "--out", str(tmp_path / "a")]) == 2
    assert "--epochs 0; accepted: an integer >= 1" in capsys.readouterr().err
    assert main([NET, *QUICK, "--data-dir", str(cifar_dir), "--out", str(trained)]) == 2
    assert (f"--out {trained} exists (a finished training); accepted: a new or empty folder"
            in capsys.readouterr().err)
    assert main([NET, "--resume", "--out", str(tmp_path / "b")]) == 2
    assert (f"--resume: {tmp_path / 'b.partial' / 'checkpoint.pt'} does not exist (no "
            f"interrupted training of --out {tmp_path / 'b'})" in capsys.readouterr().err)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


BAD = [
    (["--lr", "0"], "--lr 0.0; accepted: a number > 0"),
    (["--lr", "nan"], "--lr nan; accepted: a number > 0"),
    (["--weight-decay", "-1"], "--weight-decay -1.0; accepted: a number >= 0"),
    (["--label-smoothing", "1"], "--label-smoothing 1.0; accepted: 0 <= value < 1"),
    (["--train-fraction", "2"], "--train-fraction 2.0; accepted: 0 < value <= 1"),
    (["--epochs", "1", "--warmup-epochs", "1"],
     "--warmup-epochs 1.0; accepted: 0 <= value < --epochs (1)"),
    (["--batch-size", "0"], "--batch-size 0; accepted: an integer >= 1"),
]


@pytest.mark.parametrize("argv,line", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_values_one_line_exit_2_nothing_created(tmp_path, capsys, argv, line):
    out = tmp_path / "o"
    assert main([NET, *argv, "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"igcv-train: error: {line}\n"
    assert list(tmp_path.iterdir()) == []


def test_out_states(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert main([NET, "--out", str(f)]) == 2
    assert capsys.readouterr().err == (f"igcv-train: error: --out {f} exists (not an empty "
                                       "folder); accepted: a new or empty folder\n")
    (tmp_path / "o.partial").mkdir()
    assert main([NET, "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == (
        f"igcv-train: error: {tmp_path / 'o.partial'} holds an interrupted training of --out "
        f"{tmp_path / 'o'}; continue it with --resume, or delete it\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "o.partial"]


def test_help_is_plain_text_and_documents_the_warmup():
    r = subprocess.run([sys.executable, "-m", "igcv_nas.cli.train", "--help"], capture_output=True,
                       text=True, check=True)
    assert "``" not in r.stdout and ":func:" not in r.stdout
    text = " ".join(r.stdout.split())
    assert "default min(5, epochs / 10): 5 for 50 epochs and more, 0.1 for 1 epoch" in text
    assert "OUT is written only when the training ends" in text


@pytest.mark.integration
def test_one_epoch_at_chance_warns_instead_of_reporting(tmp_path, cifar_dir, capsys, monkeypatch):
    """--epochs 1 with the default warm-up (0.1 epoch); a learning rate too small to learn
    anything: the accuracy is at chance and igcv-train says so. Plain progress lines (capsys is
    no terminal), a step line for every step with LOG_EVERY_S = 0."""
    import inspect

    import igcv_nas.cli.train as cli
    from igcv_nas.evaluate.train import ProxyTrainer
    monkeypatch.setattr(cli, "LOG_EVERY_S", 0.0)
    out = tmp_path / "one"
    argv = [NET, "--epochs", "1", "--lr", "1e-6", "--train-fraction", "0.01", "--batch-size", "64",
            "--val-size", "500", "--device", "cpu", "--data-dir", str(cifar_dir), "--out", str(out)]
    assert main(argv) == 0
    io = capsys.readouterr()
    r = json.loads((out / "result.json").read_text())
    lines = io.out.splitlines()
    assert lines[0] == ("igcv-train: 1 epoch of 7 steps (batch 64, 450 training images, 500 "
                        "validation images), warm-up 0.1 epochs, peak lr 1e-06, on cpu")
    assert r["recipe"]["warmup"] == pytest.approx(0.1) and r["recipe"]["eval_batch_size"] == 128
    step_re = (r"\[\d\d:\d\d:\d\d\] epoch 1/1  step (\d)/7 \((\d)/7 of the epoch\)  loss "
               r"\d+\.\d{4}  [\d,]+ img/s  ETA \d:\d\d:\d\d")
    steps = [m.groups() for m in (re.fullmatch(step_re, ln) for ln in lines) if m]
    if "on_step" in inspect.signature(ProxyTrainer.fit).parameters:
        assert steps == [(str(i), str(i)) for i in range(1, 8)]
    epoch = [ln for ln in lines if ln.startswith("epoch ")]
    assert len(epoch) == 1 and re.fullmatch(
        rf"epoch 1/1  steps 7/7  loss \d+\.\d{{4}}  val acc {r['val_acc']:.4f}  [\d,]+ img/s  "
        r"\d+ s  ETA 0:00:00", epoch[0])
    assert lines[-2] == "igcv-train: scoring the 10,000 test images"
    assert lines[-1].startswith(f"igcv-train: val acc {r['val_acc']:.4f}, test acc "
                                f"{r['test_acc']:.4f} (10,000 test images, ")
    assert " -- NOT a result, see the warnings above; weights in " in lines[-1]
    assert r["val_acc"] <= 0.15 and r["test_acc"] <= 0.15 and r["chance_acc"] == 0.1
    chance = (f"val acc {r['val_acc']:.4f} and test acc {r['test_acc']:.4f} are at chance level "
              "(1/10 = 0.1000; <= 1.5/10 = 0.1500 counts as chance): the network has not "
              "learned, this is not a result")
    assert chance in r["warnings"]
    assert f"igcv-train: WARNING: {chance}" in io.err.splitlines()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one"]


@pytest.mark.integration
def test_divergence_is_an_error_and_leaves_nothing(tmp_path, cifar_dir, capsys):
    out = tmp_path / "div"
    assert main([NET, "--epochs", "1", "--lr", "1e20", "--train-fraction", "0.01", "--batch-size",
                 "64", "--val-size", "100", "--device", "cpu", "--data-dir", str(cifar_dir),
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == ["igcv-train: error: the training diverged: training loss is nan in epoch 1 "
                   "(lr 1e+20, batch 64); nothing was written. Try a lower --lr (now 1e+20) or a "
                   "longer --warmup-epochs (now 0.1)"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
def test_ctrl_c_before_the_first_epoch_leaves_nothing(tmp_path, cifar_dir):
    import signal
    out = tmp_path / "int"
    cmd = [sys.executable, "-m", "igcv_nas.cli.train", NET, "--epochs", "1", "--train-fraction",
           "0.2", "--batch-size", "64", "--device", "cpu", "--data-dir", str(cifar_dir),
           "--out", str(out)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = tmp_path / "int.partial" / "spec.json"  # written once the training has begun
    deadline = time.time() + 900  # a loaded machine may take minutes to import and load data
    while time.time() < deadline and p.poll() is None and not started.is_file():
        time.sleep(0.05)
    if not started.is_file():
        p.kill()
        pytest.fail(f"the training never started: {p.communicate()[1][-2000:]}")
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=600)
    assert p.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == ("igcv-train: interrupted before the first epoch "
                                            "ended; nothing was kept")
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_while_preparing_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    import igcv_nas.cli.train

    def interrupted(*a, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(igcv_nas.cli.train, "prepare_training", interrupted)
    assert main([NET, "--epochs", "1", "--out", str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["igcv-train: interrupted"]
    assert list(tmp_path.iterdir()) == []
