from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from igcv_nas.nn.build import build_model
from igcv_nas.evaluate.data import MEAN_STD, Splits, load_cifar, make_splits
from igcv_nas.arch.spec import from_dict
from igcv_nas.evaluate.train import NonFiniteLoss, ProxyTrainer, TrainConfig, seed_everything


def small_spec() -> dict:
    """A 32x32 IGCV3 net small enough to train in seconds on a CPU."""
    from igcv_nas.arch.zoo import igcv3_block
    return {"name": "small", "input_size": 32, "num_classes": 10, "act": "relu6",
            "stem": {"out_chs": 16, "kernel": 3, "stride": 2},
            "stages": [[igcv3_block(16, 16, 1, 2)], [igcv3_block(16, 32, 2, 4)],
                       [igcv3_block(32, 32, 1, 4)]],
            "head_chs": 64, "dropout": 0.0}


@pytest.fixture(scope="module")
def small_splits(cifar_dir) -> Splits:
    train, test = load_cifar("cifar10", cifar_dir, download_ok=False)
    sel = np.arange(0, 50000, 25)  # 2,000 images
    return make_splits(train.subset(sel), test.subset(np.arange(0, 10000, 20)), 400, 0,
                       MEAN_STD["cifar10"])


def _run(splits, cfg, stop_after=None, resume_from=None, save_to=None):
    seed_everything(cfg.seed)
    model = build_model(from_dict(small_spec()))
    tr = ProxyTrainer(model, splits, cfg)
    if resume_from:
        tr.load(resume_from)

    def on_epoch(rep):
        if save_to:
            tr.save(save_to)
        return stop_after is not None and rep.epoch >= stop_after

    return tr, tr.fit(on_epoch)


CFG = TrainConfig(epochs=3, batch_size=64, lr=0.1, seed=1, device="cpu")


@pytest.mark.integration
def test_training_learns_and_reports_every_epoch(small_splits):
    _, res = _run(small_splits, CFG)
    assert [h.epoch for h in res.history] == [1, 2, 3]
    assert res.steps == 3 * (1600 // 64) and res.images == res.steps * 64
    assert res.history[-1].train_loss < res.history[0].train_loss
    assert res.val_acc > 0.2  # 10 classes: chance is 0.1
    assert res.best_val_acc >= res.val_acc


@pytest.mark.integration
def test_same_seed_same_weights_on_cpu(small_splits):
    a, ra = _run(small_splits, CFG)
    b, rb = _run(small_splits, CFG)
    assert ra.val_acc == rb.val_acc
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


@pytest.mark.integration
def test_restore_from_checkpoint_equals_uninterrupted_run(small_splits, tmp_path):
    ck = tmp_path / "ck.pt"
    full, r_full = _run(small_splits, CFG)
    _, r_part = _run(small_splits, CFG, stop_after=1, save_to=ck)
    assert r_part.epochs == 1 and r_part.stopped_early
    resumed, r_res = _run(small_splits, CFG, resume_from=ck)
    assert [h.val_acc for h in r_res.history] == [h.val_acc for h in r_full.history]
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


@pytest.mark.integration
def test_step_budget_and_train_fraction(small_splits):
    cfg = TrainConfig(steps=10, batch_size=32, train_fraction=0.5, lr=0.05, device="cpu")
    tr, res = _run(small_splits, cfg)
    assert tr.train.n == 800 and tr.steps_per_epoch == 25
    assert res.steps == 10 and res.epochs == 1


@pytest.mark.integration
def test_nan_loss_raises(small_splits):
    cfg = TrainConfig(epochs=1, batch_size=64, lr=1e30, device="cpu")
    with pytest.raises(NonFiniteLoss, match="training loss is nan"):
        _run(small_splits, cfg)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="schedule='step'"):
        TrainConfig(schedule="step")
    with pytest.raises(ValueError, match="train_fraction=0"):
        TrainConfig(train_fraction=0)


@pytest.mark.integration
def test_lr_schedules_warm_up_and_decay(small_splits):
    for sched in ("onecycle", "linear"):
        tr = ProxyTrainer(build_model(from_dict(small_spec())), small_splits,
                          TrainConfig(epochs=2, batch_size=64, schedule=sched, device="cpu"))
        f = [tr._lr_factor(s) for s in range(tr.total_steps)]
        peak = f.index(max(f))
        assert math.isclose(max(f), 1.0) and 0 < peak < len(f) - 1
        assert f[-1] < 0.1 and all(a <= b for a, b in zip(f[:peak], f[1:peak + 1]))


@pytest.mark.slow
def test_full_size_cifar10_epoch(cifar_dir):
    """One epoch on the full 45,000-image training split, scored on all 5,000 validation images."""
    from igcv_nas.evaluate.data import load_splits
    full = load_splits("cifar10", cifar_dir, val_size=5000, seed=0, download_ok=False)
    seed_everything(0)
    tr = ProxyTrainer(build_model(from_dict(small_spec())), full,
                      TrainConfig(epochs=1, batch_size=128, lr=0.1, device="cpu"))
    res = tr.fit()
    assert tr.train.n == 45000 and tr.val.n == 5000
    assert res.steps == 45000 // 128
    assert res.val_acc > 0.35


@pytest.mark.integration
def test_data_seed_and_init_seed_are_separate(small_splits):
    """Same data_seed: the same subset, order and augmentation whatever the init seed (common
    random numbers); another data_seed: another order."""
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.1, train_fraction=0.5, device="cpu")
    trainers = []
    for seed, data_seed in ((1, 0), (2, 0), (1, 9)):
        seed_everything(seed)
        trainers.append(ProxyTrainer(build_model(from_dict(small_spec())), small_splits,
                                     replace(cfg, seed=seed, data_seed=data_seed)))
    a, b, c = trainers
    assert torch.equal(a.train.x, b.train.x) and not torch.equal(a.train.x, c.train.x)
    assert torch.equal(a.gen.get_state(), b.gen.get_state())
    wa = next(a.model.parameters()).detach().clone()
    assert not torch.equal(wa, next(b.model.parameters()))  # other initial weights


@pytest.mark.integration
def test_tse_is_the_sum_of_step_losses_and_on_step_counts(small_splits):
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.1, device="cpu", eval_each_epoch=False)
    seed_everything(0)
    tr = ProxyTrainer(build_model(from_dict(small_spec())), small_splits, cfg)
    steps = []
    res = tr.fit(on_step=steps.append)
    assert [s.step for s in steps] == list(range(1, tr.total_steps + 1))
    assert {s.epoch for s in steps} == {1, 2} and steps[-1].total_steps == tr.total_steps
    assert res.tse == pytest.approx(sum(s.loss for s in steps), rel=1e-5)
    assert math.isnan(res.history[0].val_acc) and res.val_acc == res.history[1].val_acc
    acc, loss = tr.evaluate_full()
    assert (acc, loss) == (res.val_acc, res.val_loss)


def test_old_checkpoint_config_without_data_seed_loads():
    d = TrainConfig(seed=4).to_dict()
    del d["data_seed"]
    assert TrainConfig.from_dict(d) == TrainConfig(seed=4, data_seed=4)


@pytest.mark.parametrize("device", ["tpu", "mps", "cuda:x", "", "meta"])
def test_a_device_torch_or_the_trainer_cannot_use_is_bad_input(device):
    from igcv_nas.errors import InputError
    from igcv_nas.evaluate.train import pick_device
    with pytest.raises(InputError, match=r"accepted: auto, cpu, cuda, cuda:N"):
        pick_device(device)
    assert pick_device("cpu").type == "cpu"
