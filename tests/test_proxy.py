from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from igcv_nas.evaluate.data import MEAN_STD, load_cifar, make_splits
from igcv_nas.evaluate.proxy import CPU_BUDGET, ProxyBudget, default_budget, evaluate
from igcv_nas.arch.spec import from_dict
from igcv_nas.evaluate.train import TrainConfig
from igcv_nas.evaluate.zero_cost import PROXIES

from .test_train import small_spec


@pytest.fixture(scope="module")
def splits(cifar_dir):
    train, test = load_cifar("cifar10", cifar_dir, download_ok=False)
    return make_splits(train.subset(np.arange(0, 50000, 50)), test.subset(np.arange(0, 10000, 50)),
                       300, 0, MEAN_STD["cifar10"])


BUDGET = ProxyBudget(mode="both", train=TrainConfig(epochs=2, batch_size=64, device="cpu"),
                     zc_batch=16, val_size=200)


def test_cpu_default_budget_is_the_documented_one():
    b = default_budget("cpu")
    assert b == replace(CPU_BUDGET, mode="training")
    got = (b.train.epochs, b.train.train_fraction, b.train.batch_size, b.val_size)
    assert got == (1, 0.06, 32, 5000)
    assert b.train.device == "cpu" and b.dropout == 0.0 and not b.train.eval_each_epoch


@pytest.mark.integration
def test_evaluate_both_gives_training_and_zero_cost_scores(splits):
    s = evaluate(from_dict(small_spec()), splits, BUDGET)
    assert set(s) == {f"zc_{n}" for n in PROXIES} | {
        "val_acc", "val_loss", "tse", "best_val_acc", "epochs", "train_seconds", "images_per_s"}
    assert s["epochs"] == 2 and 0 <= s["val_acc"] <= 1 and all(math.isfinite(v) for v in s.values())
    # scored on the 200-image validation subset: accuracies are multiples of 1/200
    assert abs(s["val_acc"] * 200 - round(s["val_acc"] * 200)) < 1e-9


@pytest.mark.integration
def test_zero_cost_only_trains_nothing(splits):
    s = evaluate(from_dict(small_spec()), splits, replace(BUDGET, mode="zero-cost"))
    assert set(s) == {f"zc_{n}" for n in PROXIES}


@pytest.mark.integration
def test_checkpoint_resume_through_evaluate(splits, tmp_path):
    ck = str(tmp_path / "trial.pt")
    b = replace(BUDGET, mode="training")
    full = evaluate(from_dict(small_spec()), splits, b)
    part = evaluate(from_dict(small_spec()), splits, b, on_epoch=lambda r: r.epoch >= 1,
                    checkpoint=ck)
    assert part["epochs"] == 1
    resumed = evaluate(from_dict(small_spec()), splits, b, checkpoint=ck, resume=True)
    assert resumed["epochs"] == 2 and resumed["val_acc"] == full["val_acc"]


@pytest.mark.integration
def test_class_count_mismatch_is_refused(splits):
    d = small_spec()
    d["num_classes"] = 100
    with pytest.raises(ValueError, match="spec has 100 classes, the data set 10"):
        evaluate(from_dict(d), splits, BUDGET)


def test_bad_budget():
    with pytest.raises(ValueError, match="proxy mode 'fast'"):
        ProxyBudget(mode="fast")


@pytest.mark.integration
def test_scores_are_from_the_last_epoch_on_the_val_subset(splits):
    b = replace(BUDGET, mode="training", train=replace(BUDGET.train, eval_each_epoch=False))
    seen = []
    s = evaluate(from_dict(small_spec()), splits, b, on_epoch=seen.append)
    assert [r.epoch for r in seen] == [1, 2]
    assert math.isnan(seen[0].val_acc) and math.isnan(seen[0].val_loss)  # not validated
    got = (seen[1].val_acc, seen[1].val_loss, seen[1].tse)
    assert got == (s["val_acc"], s["val_loss"], s["tse"])
    assert s["val_loss"] > 0 and s["tse"] > 0


@pytest.mark.integration
def test_proxy_trains_without_dropout_unless_told(splits):
    d = small_spec()
    d["dropout"] = 0.5
    spec = from_dict(d)
    b = replace(BUDGET, mode="training", train=replace(BUDGET.train, epochs=1))
    no_drop = evaluate(spec, splits, b)
    d["dropout"] = 0.0
    assert evaluate(from_dict(d), splits, b)["val_acc"] == no_drop["val_acc"]
    assert evaluate(spec, splits, replace(b, dropout=None))["tse"] != no_drop["tse"]


def test_with_seeds_and_old_budget_dicts():
    b = CPU_BUDGET.with_seeds(3, 4)
    assert (b.train.seed, b.train.data_seed) == (3, 4)
    assert CPU_BUDGET.with_seeds(5).train.data_seed == CPU_BUDGET.train.data_seed
    old = CPU_BUDGET.to_dict()
    del old["dropout"]
    del old["train"]["data_seed"]
    old["train"]["seed"] = 6
    back = ProxyBudget.from_dict(old)
    assert back.dropout is None and back.train.data_seed == 6  # as recorded before the split
