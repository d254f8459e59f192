"""A final training started from Python (igcv_nas.evaluate.training_run) gets the guarantees of
igcv-train: the same refusals with the same one-line messages and nothing created, the same
files in OUT, nothing left by a diverged training."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from igcv_nas.cli.train import main
from igcv_nas.evaluate.data import DataError
from igcv_nas.errors import IGCVError, InputError
from igcv_nas.arch.spec import SpecError
from igcv_nas.evaluate.train import NonFiniteLoss
from igcv_nas.evaluate.training_run import (PreparedTraining, default_warmup, partial_dir,
                                            prepare_training, train_spec)
from igcv_nas.arch.zoo import get

NET = "igcv3_d_0.25_cifar"
TINY = {"epochs": 1, "train_fraction": 0.01, "batch_size": 64, "val_size": 100, "device": "cpu"}
TINY_ARGV = ["--epochs", "1", "--train-fraction", "0.01", "--batch-size", "64", "--val-size",
             "100", "--device", "cpu"]


def cli_error(argv: list[str], capsys) -> str:
    """The one line igcv-train prints for ``argv`` (after its ``error:``), checking exit 2."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("igcv-train: error: "), err
    return err.removeprefix("igcv-train: error: ")


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


# (CLI arguments, the same training as library keywords, the error class)
SAME = [
    (["--epochs", "0"], {"epochs": 0}, InputError),
    (["--batch-size", "0"], {"batch_size": 0}, InputError),
    (["--val-size", "0"], {"val_size": 0}, InputError),
    (["--lr", "0"], {"lr": 0.0}, InputError),
    (["--lr", "nan"], {"lr": float("nan")}, InputError),
    (["--weight-decay", "-1"], {"weight_decay": -1.0}, InputError),
    (["--label-smoothing", "1"], {"label_smoothing": 1.0}, InputError),
    (["--train-fraction", "2"], {"train_fraction": 2.0}, InputError),
    (["--epochs", "1", "--warmup-epochs", "1"], {"epochs": 1, "warmup_epochs": 1.0}, InputError),
    (["--resume"], {"resume": True}, InputError),
    (["--dataset", "/nonexistent/folder"], {"dataset": "/nonexistent/folder"}, DataError),
]


@pytest.mark.parametrize("argv,kw,cls", SAME, ids=[" ".join(a) for a, _, _ in SAME])
def test_library_refuses_what_the_cli_refuses_with_its_message(argv, kw, cls, tmp_path, capsys):
    out = tmp_path / "o"
    expected = cli_error([NET, *argv, "--out", str(out)], capsys)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(cls) as e:
        prepare_training(NET, out, **kw)
    assert one_line(e.value) == expected and isinstance(e.value, IGCVError)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("source", ["resnet50", "bad.json", "invalid.json"])
def test_a_spec_is_read_and_refused_as_the_cli_does(source, tmp_path, capsys, tiny):
    d = tmp_path / "in"
    d.mkdir()
    (d / "bad.json").write_text("{not json")
    tiny["stages"][0][0]["layers"][0]["perm"] = None  # not complementary
    (d / "invalid.json").write_text(json.dumps(tiny))
    src = str(d / source) if source.endswith(".json") else source
    expected = cli_error([src, "--out", str(tmp_path / "o")], capsys)
    with pytest.raises(SpecError) as e:
        prepare_training(src, tmp_path / "o")
    assert one_line(e.value) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_out_states_are_refused_as_the_cli_does(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    (tmp_path / "o.partial").mkdir()
    for out in (f, tmp_path / "o"):
        expected = cli_error([NET, "--out", str(out)], capsys)
        with pytest.raises(InputError) as e:
            prepare_training(NET, out)
        assert one_line(e.value) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "o.partial"]


@pytest.mark.parametrize("kw,needle", [
    ({"lr": "0.1"}, "--lr 0.1; accepted: a number > 0"),
    ({"epochs": 2.5}, "--epochs 2.5; accepted: an integer >= 1"),
    ({"epochs": True}, "--epochs True; accepted: an integer >= 1"),
    ({"warmup_epochs": "1"}, "--warmup-epochs 1; accepted: 0 <= value < --epochs (200)"),
])
def test_values_only_python_can_give_are_refused(kw, needle, tmp_path):
    with pytest.raises(InputError) as e:
        prepare_training(NET, tmp_path / "o", **kw)
    assert needle == one_line(e.value)
    with pytest.raises(SpecError, match="spec 42; accepted: a NetworkSpec, a spec JSON file"):
        prepare_training(42, tmp_path / "o")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_an_invalid_spec_object_is_refused_naming_it(tmp_path):
    spec = get(NET)
    with pytest.raises(SpecError, match=r"^igcv3_d_0\.25_cifar: "):
        prepare_training(spec.with_target(4, None), tmp_path / "o")
    assert list(tmp_path.iterdir()) == []


def test_warmup_and_partial_dir():
    assert default_warmup(200) == 5.0 and default_warmup(1) == pytest.approx(0.1)
    assert partial_dir("a/b") == Path("a/b.partial")


@pytest.mark.integration
def test_prepared_training_is_the_variant_and_creates_nothing(tmp_path, cifar_dir):
    said: list[str] = []
    p = prepare_training("igcv3_d_0.25", tmp_path / "o", data_dir=cifar_dir, log=said.append,
                         **TINY)
    assert isinstance(p, PreparedTraining) and p.spec.input_size == 32
    assert p.spec.num_classes == 10 and p.config.warmup == pytest.approx(0.1)
    assert said == [f"training the cifar10 variant (32x32, stem stride 1, stage 2 not "
                    f"downsampling, 10 classes): arch id {p.spec.arch_id}"]
    assert len(p.splits.test) == 10_000 and list(tmp_path.iterdir()) == []


@pytest.mark.integration
def test_resume_of_another_architecture_is_refused_as_the_cli_does(tmp_path, cifar_dir, capsys):
    part = tmp_path / "o.partial"
    part.mkdir()
    other = get("mobilenet_v2_0.5_cifar")
    (part / "spec.json").write_text(json.dumps({"spec": other.to_dict()}))
    (part / "checkpoint.pt").write_bytes(b"x")
    argv = [NET, "--resume", "--data-dir", str(cifar_dir), "--out", str(tmp_path / "o")]
    expected = cli_error(argv, capsys)
    with pytest.raises(InputError) as e:
        prepare_training(NET, tmp_path / "o", resume=True, data_dir=cifar_dir)
    assert one_line(e.value) == expected and f"trains arch {other.arch_id}, not " in expected
    assert sorted(p.name for p in part.iterdir()) == ["checkpoint.pt", "spec.json"]


@pytest.mark.integration
def test_library_and_cli_write_the_same_training(tmp_path, cifar_dir, capsys):
    cli_out, lib_out = tmp_path / "cli", tmp_path / "lib"
    assert main([NET, *TINY_ARGV, "--data-dir", str(cifar_dir), "--out", str(cli_out)]) == 0
    capsys.readouterr()
    outcome = train_spec(NET, lib_out, data_dir=cifar_dir, **TINY)
    assert outcome.out == lib_out and not partial_dir(lib_out).exists()
    names = sorted(p.name for p in cli_out.iterdir())
    assert names == sorted(p.name for p in lib_out.iterdir()) == [
        "checkpoint.pt", "history.csv", "result.json", "spec.json", "weights.pt"]
    assert (cli_out / "spec.json").read_text() == (lib_out / "spec.json").read_text()
    a, b = (json.loads((d / "result.json").read_text()) for d in (cli_out, lib_out))
    assert outcome.result == b and outcome.warnings == b["warnings"]
    timing = ("seconds", "test_seconds", "wall_seconds_this_run")
    assert {k: v for k, v in a.items() if k not in timing} == \
        {k: v for k, v in b.items() if k not in timing}
    wa, wb = (torch.load(d / "weights.pt", weights_only=True) for d in (cli_out, lib_out))
    assert wa["source"] == f"igcv-train --out {cli_out}"
    assert wb["source"] == f"igcv-train --out {lib_out}" and wb["trained"] is True
    assert all(torch.equal(wa["state_dict"][k], wb["state_dict"][k]) for k in wa["state_dict"])
    assert outcome.test_images == 10_000


@pytest.mark.integration
def test_a_diverged_training_raises_and_leaves_nothing(tmp_path, cifar_dir):
    prepared = prepare_training(NET, tmp_path / "o", data_dir=cifar_dir, **{**TINY, "lr": 1e20})
    with pytest.raises(NonFiniteLoss, match="training loss is nan in epoch 1"):
        prepared.run()
    assert list(tmp_path.iterdir()) == [] and not prepared.resumable
