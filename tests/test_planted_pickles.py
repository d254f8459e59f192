"""No file igcv-nas reads runs code: a pickle that would call ``os.system`` is planted in every
place the project loads a torch file from (a proxy-training checkpoint, igcv-train's resume
checkpoint, igcv-export's --weights) and each reader refuses it in one line, with the marker
file its payload would create never appearing. Damaged and older checkpoints are refused the
same way, and a search trial handed a bad checkpoint trains again from the start."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from igcv_nas.arch.spec import from_dict
from igcv_nas.evaluate.data import MEAN_STD, Splits, load_cifar, make_splits
from igcv_nas.evaluate.train import (CHECKPOINT_FORMAT, CheckpointError, ProxyTrainer,
                                     TrainConfig, read_checkpoint)
from igcv_nas.nn.build import build_model

from .test_train import small_spec

CFG = TrainConfig(epochs=2, batch_size=64, lr=0.1, seed=1, device="cpu")


class Payload:
    """Unpickling this runs ``touch MARKER`` (what a hostile checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(path: Path, marker: Path, wrap: bool = True) -> Path:
    """A torch file at ``path`` whose unpickling would create ``marker``."""
    obj = {"format": CHECKPOINT_FORMAT, "model": Payload(marker)} if wrap else Payload(marker)
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def tiny_splits(cifar_dir) -> Splits:
    train, test = load_cifar("cifar10", cifar_dir, download_ok=False)
    return make_splits(train.subset(np.arange(0, 50000, 100)), test.subset(np.arange(0, 10000, 50)),
                       100, 0, MEAN_STD["cifar10"])


def trainer(splits: Splits, cfg: TrainConfig = CFG) -> ProxyTrainer:
    return ProxyTrainer(build_model(from_dict(small_spec())), splits, cfg)


def test_the_payload_runs_when_loaded_the_unsafe_way(tmp_path):
    """The planted file is a real exploit: loaded with weights_only=False it runs its command
    (so the refusals below are what stops it)."""
    marker = tmp_path / "ran"
    torch.load(plant(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("wrap", [True, False], ids=["inside-a-checkpoint", "bare"])
def test_a_planted_checkpoint_is_refused_and_runs_nothing(tmp_path, tiny_splits, wrap):
    marker = tmp_path / "ran"
    f = plant(tmp_path / "checkpoint.pt", marker, wrap)
    with pytest.raises(CheckpointError, match=f"checkpoint {f} is refused: weights-only loading "
                                              f"found something other than tensors"):
        trainer(tiny_splits).load(f)
    assert not marker.exists()


def test_a_checkpoint_round_trips_with_its_tag(tmp_path, tiny_splits):
    a = trainer(tiny_splits)
    a.fit(lambda rep: True)  # one epoch, then stop
    f = tmp_path / "c.pt"
    a.save(f, {"arch_id": "abc"})
    s = read_checkpoint(f)
    assert s["format"] == CHECKPOINT_FORMAT and s["tag"] == {"arch_id": "abc"}
    b = trainer(tiny_splits)
    b.load(f, {"arch_id": "abc"})
    assert (b.epoch, b.step) == (1, a.step)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    with pytest.raises(CheckpointError, match=f"checkpoint {f} belongs to arch_id 'abc', not "
                                              f"'xyz'"):
        trainer(tiny_splits).load(f, {"arch_id": "xyz"})
    other = replace(CFG, seed=2)
    with pytest.raises(CheckpointError, match="written with a different training config"):
        trainer(tiny_splits, other).load(f, {"arch_id": "abc"})


def _saved(tmp_path: Path, splits: Splits) -> tuple[Path, bytes]:
    t = trainer(splits)
    f = tmp_path / "c.pt"
    t.save(f, {"arch_id": "abc"})
    return f, f.read_bytes()


def test_a_flipped_weight_byte_is_refused_by_the_checksum(tmp_path, tiny_splits):
    f, raw = _saved(tmp_path, tiny_splits)
    w = torch.load(f, weights_only=True)["model"]["stem.conv.convs.0.weight"]
    # the first weight's bytes as torch stores them: flip one byte inside them
    at = raw.find(bytes(w.untyped_storage())[:16])
    assert at > 0
    bad = bytearray(raw)
    bad[at + 3] ^= 0xFF
    f.write_bytes(bytes(bad))
    assert not torch.equal(torch.load(f, weights_only=True)["model"]["stem.conv.convs.0.weight"],
                           w)  # torch itself loads the changed weight without a word
    with pytest.raises(CheckpointError, match=f"checkpoint {f} is damaged: its content does not "
                                              f"match the SHA-256"):
        trainer(tiny_splits).load(f)


def test_truncated_older_and_foreign_checkpoints_are_one_line(tmp_path, tiny_splits):
    f, raw = _saved(tmp_path, tiny_splits)
    f.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=f"checkpoint {f} is damaged or truncated"):
        trainer(tiny_splits).load(f)
    t = trainer(tiny_splits)
    old = {k: v for k, v in t.state_dict().items() if k not in ("format", "tag", "sha256")}
    torch.save(old, f)  # what igcv-nas 0.1 wrote
    with pytest.raises(CheckpointError, match=f"checkpoint {f} has format None .*accepted: "
                                              f"{CHECKPOINT_FORMAT}"):
        trainer(tiny_splits).load(f)
    f.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=f"checkpoint {f} is refused: weights-only"):
        trainer(tiny_splits).load(f)


def test_a_trial_with_a_bad_checkpoint_trains_again_from_the_start(tmp_path, tiny_splits):
    """What a search trial does with a planted or damaged checkpoint: one note, nothing run,
    and the training from epoch 1 (its scores equal a fresh run's)."""
    from igcv_nas.evaluate.proxy import ProxyBudget, evaluate
    spec = from_dict(small_spec())
    budget = ProxyBudget(train=CFG, val_size=100)
    marker = tmp_path / "ran"
    ck = plant(tmp_path / "checkpoint.pt", marker)
    notes: list[str] = []
    resumed = evaluate(spec, tiny_splits, budget, checkpoint=str(ck), resume=True,
                       on_damaged=notes.append)
    assert not marker.exists()
    assert len(notes) == 1 and notes[0].startswith(f"checkpoint {ck} is refused: weights-only")
    assert notes[0].endswith("; trained again from the start")
    fresh = evaluate(spec, tiny_splits, budget)
    assert resumed["val_acc"] == fresh["val_acc"] and resumed["epochs"] == 2
    plant(ck, marker)
    with pytest.raises(CheckpointError):  # without on_damaged the caller decides
        evaluate(spec, tiny_splits, budget, checkpoint=str(ck), resume=True)
    assert not marker.exists()


def test_igcv_train_resume_refuses_a_planted_checkpoint(tmp_path, cifar_dir, capsys):
    from igcv_nas.arch import zoo
    from igcv_nas.arch.space import to_cifar
    from igcv_nas.cli.train import main
    net = "igcv3_d_0.25_cifar"
    spec = zoo.get(net)
    spec = to_cifar(spec, 10, 32) if (spec.input_size, spec.num_classes) != (32, 10) else spec
    out = tmp_path / "o"
    part = tmp_path / "o.partial"
    part.mkdir()
    (part / "spec.json").write_text(json.dumps({"spec": spec.to_dict(),
                                                "arch_id": spec.arch_id}))
    marker = tmp_path / "ran"
    ck = plant(part / "checkpoint.pt", marker)
    rc = main([net, "--epochs", "2", "--train-fraction", "0.01", "--batch-size", "64",
               "--val-size", "500", "--device", "cpu", "--data-dir", str(cifar_dir),
               "--out", str(out), "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not marker.exists()
    assert len(err) == 1 and err[0].startswith(f"igcv-train: error: --resume: checkpoint {ck} "
                                               f"is refused: weights-only loading")
    assert not out.exists()


def test_igcv_export_weights_refuses_a_planted_pickle(tmp_path, capsys):
    from igcv_nas.cli.export import main
    marker = tmp_path / "ran"
    wf = plant(tmp_path / "w.pt", marker, wrap=False)
    rc = main(["igcv3_d_0.25_cifar", "--weights", str(wf), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not marker.exists() and not (tmp_path / "out").exists()
    assert len(err) == 1 and err[0].startswith(f"igcv-export: error: --weights {wf}: ")
