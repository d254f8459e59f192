"""Deployment form: BN folding and dense collapse of 1x1 group-conv chains (same function)."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from igcv_nas.arch import zoo
from igcv_nas.nn.build import build_model
from igcv_nas.cli.export import main as export_main
from igcv_nas.artifacts.deploy import DenseConv, FoldedConv, affine, chains, collapse, deploy


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    m = build_model(zoo.get(name))
    for mod in m.modules():  # non-trivial statistics so that folding is exercised
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.normal_(0, 0.2)
    return m.eval()


@pytest.fixture(scope="module")
def igcv2():
    return _model("igcv2_0.5_cifar")


def test_chains_of_the_igcv2_net(igcv2):
    # every IGCV2 block is dw3x3 followed by L-1 = 2 or 3 linear 1x1 group convs
    runs = [chains(b) for b in igcv2.blocks]
    assert all(len(r) == 1 and r[0][0] == 1 and r[0][1] == len(b.ops)
               for r, b in zip(runs, igcv2.blocks))
    igcv3 = _model("igcv3_d_0.25_cifar")
    assert all(chains(b) == [] for b in igcv3.blocks)  # activations between its 1x1 convs


@pytest.mark.parametrize("mode", ["none", "all"])
def test_deployed_model_computes_the_same_function(igcv2, mode):
    d = deploy(igcv2, mode)
    assert not [m for m in d.modules() if isinstance(m, nn.BatchNorm2d)]
    n_dense = len([m for m in d.modules() if isinstance(m, DenseConv)])
    assert n_dense == (len(igcv2.blocks) if mode == "all" else 0)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref, got = igcv2(x), d(x)
    assert ref.abs().max() > 1e-3
    assert (got - ref).abs().max() <= 1e-5 * max(1.0, float(ref.abs().max()))


def test_collapsed_weight_is_the_product_of_the_chain(igcv2):
    blk = igcv2.blocks[3]
    s, e = chains(blk)[0]
    ops = list(blk.ops)[s:e]
    dense = collapse(ops)
    x = torch.randn(2, sum(ops[0].conv.splits), 5, 5)
    with torch.no_grad():
        y = x
        for cb in ops:
            y = cb(y)
        assert torch.allclose(dense(x), y, atol=1e-5)
    # dense by the complementary condition: every output depends on every input
    a, _ = affine(ops[0])
    for cb in ops[1:]:
        a = affine(cb)[0] @ a
    assert (a != 0).all()
    assert dense.conv.weight.shape[:2] == a.shape


def test_auto_asks_the_timer_for_each_chain(igcv2):
    calls = []

    def decide(sparse, dense, shape):
        calls.append(shape)
        return len(calls) % 2 == 0  # collapse every second chain

    d = deploy(igcv2, "auto", 32, decide=decide)
    assert len(calls) == len(igcv2.blocks)
    assert len([m for m in d.modules() if isinstance(m, DenseConv)]) == len(igcv2.blocks) // 2
    assert all(isinstance(m, (FoldedConv, DenseConv)) for b in d.blocks for m in b.ops)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (d(x) - igcv2(x)).abs().max() <= 1e-5 * max(1.0, float(igcv2(x).abs().max()))


@pytest.mark.integration
def test_export_in_deployment_form_verifies(tmp_path):
    assert export_main(["igcv2_0.5_cifar", "--deploy", "all", "--format", "json,pt,torchscript",
                        "--out", str(tmp_path)]) == 0
    (d,) = list(tmp_path.iterdir())
    rep = json.loads((d / "verify.json").read_text())
    ts = next(c for c in rep["checks"] if c["check"] == "torchscript_outputs")
    assert rep["ok"] and ts["form"] == "deployed (all)" and ts["max_abs_diff"] <= 1e-4
    assert json.loads((d / "spec.json").read_text())["artifacts"] == {"deploy": "all"}
