from __future__ import annotations

import math

import optuna
import pytest
import torch
from torch import nn

from igcv_nas.nn.build import ChannelGather, ChannelShuffle, build_model
from igcv_nas.arch.space import load_space, to_cifar
from igcv_nas.arch.spec import from_dict
from igcv_nas.evaluate.zero_cost import PROXIES, _synflow, score, score_all


def _net(width: int = 16):
    from igcv_nas.arch.zoo import igcv3_block
    torch.manual_seed(0)
    return build_model(from_dict({
        "name": "z", "input_size": 32, "num_classes": 10, "act": "relu6",
        "stem": {"out_chs": width, "kernel": 3, "stride": 2},
        "stages": [[igcv3_block(width, width, 1, 2)], [igcv3_block(width, 2 * width, 2, 4)]],
        "head_chs": 0, "dropout": 0.0}))


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g)


@pytest.fixture(scope="module")
def igcv3_nets():
    """8 architectures of the igcv3 space (CIFAR-10 form), Optuna RandomSampler seed 0."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sp = load_space("igcv3")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    nets = []
    for _ in range(8):
        spec = to_cifar(sp.sample(study.ask()), 10)
        torch.manual_seed(0)
        nets.append((spec.arch_id, build_model(spec)))
    assert len({a for a, _ in nets}) == 8
    return nets


def test_all_proxies_give_finite_scores(batch):
    s = score_all(_net(), *batch)
    assert set(s) == set(PROXIES) >= {"synflow", "naswot", "grad_norm", "zico"}
    assert all(math.isfinite(v) for v in s.values())


# --- synflow ---------------------------------------------------------------------------------

def test_synflow_of_a_two_layer_net_is_the_closed_form():
    # x -> W1 -> BN -> ReLU6 -> W2 (+ b). synflow: BN removed, ReLU6 linearised, |params|, x = 1:
    # R = 1'|W2||W1|1 + sum|b|; per layer sum(theta * dR/dtheta) = P := 1'|W2||W1|1 (the bias
    # does not enter the gradients), so synflow = log10(2 P).
    net = nn.Sequential(nn.Linear(3, 4, bias=False), nn.BatchNorm1d(4), nn.ReLU6(),
                        nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1., -2, 3], [-4, 5, -6], [7, -8, 9], [-1, 0, 2]]))
        net[3].weight.copy_(torch.tensor([[1., -1, 2, -2], [-3, 1, 0, 1]]))
        net[3].bias.copy_(torch.tensor([-5., 7]))
    # |W1| row sums 6, 15, 24, 3; |W2| column sums 4, 2, 2, 3
    p = 4 * 6 + 2 * 15 + 2 * 24 + 3 * 3
    assert p == 111
    assert score("synflow", net, torch.randn(8, 3)) == pytest.approx(math.log10(2 * p), abs=1e-12)
    # ReLU6 kept (and BN in eval mode) would clip the hidden units 15 and 24 at 6: not synflow
    assert math.log10(2 * p) - math.log10(2 * (4 * 6 + 2 * 6 + 2 * 6 + 3 * 3)) > 0.2


def test_synflow_rescaling_is_exact_and_keeps_deep_nets_finite(batch, igcv3_nets):
    x = batch[0]
    for _, m in igcv3_nets[:3] + [("small", _net())]:
        assert _synflow(m, x) == pytest.approx(_synflow(m, x, rescale=False), abs=1e-9)
    # every conv weight x c: at c = 1e40 (7 convs, ~280 decades) plain float64 is still finite
    # and equals the rescaled value; at c = 1e60 (~420 decades) it overflows, the rescaled
    # value does not, and it adds the 7 x 20 decades (the residual path, through 4 of the 7
    # convs, is negligible at both scales)
    def scaled(c):
        m = _net().double()
        with torch.no_grad():
            for mod in m.modules():
                if isinstance(mod, nn.Conv2d):
                    mod.weight.mul_(c)
        return m

    assert sum(isinstance(mod, nn.Conv2d) for mod in _net().modules()) == 7
    big = _synflow(scaled(1e40), x)
    assert big > _synflow(_net(), x) + 200
    assert big == pytest.approx(_synflow(scaled(1e40), x, rescale=False), abs=1e-9)
    assert not math.isfinite(_synflow(scaled(1e60), x, rescale=False))
    assert _synflow(scaled(1e60), x) == pytest.approx(big + 140, abs=1e-9)


def test_synflow_runs_through_the_permutation_modules(batch):
    m = _net()
    assert any(isinstance(mod, (ChannelShuffle, ChannelGather)) for mod in m.modules())
    assert math.isfinite(score("synflow", m, *batch))


def test_synflow_grows_with_width(batch):
    # all-positive parameters and inputs: more channels, more paths, larger synaptic flow
    assert score("synflow", _net(32), *batch) > score("synflow", _net(16), *batch) + math.log10(2)


def test_synflow_varies_across_igcv3_architectures(batch, igcv3_nets):
    v = [score("synflow", m, *batch) for _, m in igcv3_nets]
    assert all(math.isfinite(s) for s in v)
    assert len({round(s, 6) for s in v}) == len(v)
    assert max(v) - min(v) > 0.5


@pytest.mark.parametrize("space", ["igcv2", "igcv3", "mixed", "seesaw"])
def test_synflow_is_finite_at_the_extremes_of_every_space(space, batch):
    sp = load_space(space)
    for which in ("min", "max"):
        spec = sp.sample(optuna.trial.FixedTrial(sp.extreme_params(which, cifar=True)), cifar=True)
        torch.manual_seed(0)
        assert math.isfinite(score("synflow", build_model(spec), batch[0][:1]))


# --- naswot, grad_norm -----------------------------------------------------------------------

def test_naswot_is_singular_for_identical_images(batch):
    x, _ = batch
    same = x[:1].repeat(8, 1, 1, 1)
    assert score("naswot", _net(), same) == float("-inf")
    assert math.isfinite(score("naswot", _net(), x[:8]))


def test_grad_norm_needs_labels_and_scales_with_loss(batch):
    with pytest.raises(ValueError, match="needs labels"):
        score("grad_norm", _net(), batch[0])
    assert score("grad_norm", _net(), *batch) > 0


# --- zico ------------------------------------------------------------------------------------

def test_zico_is_finite_and_deterministic(batch):
    a = score("zico", _net(), *batch)
    assert math.isfinite(a) and a == score("zico", _net(), *batch)


def test_zico_matches_its_definition_on_a_linear_layer():
    # one linear layer, two mini-batches of 2: the cross-entropy gradient of each by hand
    torch.manual_seed(0)
    net = nn.Linear(5, 3)
    x, y = torch.randn(4, 5), torch.tensor([0, 2, 1, 1])
    g = []
    for i in (slice(0, 2), slice(2, 4)):
        p = torch.softmax(net(x[i]), 1) - nn.functional.one_hot(y[i], 3)
        g.append((p.t() @ x[i] / 2).detach().double().flatten())
    g1, g2 = g
    ratio = ((g1.abs() + g2.abs()) / 2) / ((g1 - g2).abs() / 2)
    assert score("zico", net, x, y) == pytest.approx(math.log(float(ratio.sum())), rel=1e-6)


def test_zico_differs_between_architectures(batch, igcv3_nets):
    x, y = batch[0][:16], batch[1][:16]
    v = [score("zico", m, x, y) for _, m in igcv3_nets[:2]] + [score("zico", _net(w), x, y)
                                                             for w in (16, 32)]
    assert all(math.isfinite(s) for s in v)
    assert len({round(s, 6) for s in v}) == len(v)


def test_zico_needs_labels_and_two_mini_batches(batch):
    with pytest.raises(ValueError, match="needs labels"):
        score("zico", _net(), batch[0])
    with pytest.raises(ValueError, match="at least"):
        score("zico", _net(), batch[0][:3], batch[1][:3])


# --- the caller's model ----------------------------------------------------------------------

@pytest.mark.parametrize("train", [True, False])
def test_scoring_leaves_the_model_untouched(batch, train):
    m = _net().train(train)
    before = {k: v.clone() for k, v in m.state_dict().items()}  # BN running stats included
    modules = [type(mod) for mod in m.modules()]
    score_all(m, *batch)
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in m.parameters())
    assert m.training == train and [type(mod) for mod in m.modules()] == modules
    assert all(p.dtype == torch.float32 for p in m.parameters())


def test_unknown_proxy():
    with pytest.raises(ValueError, match="unknown zero-cost proxy 'jacov'"):
        score("jacov", _net(), torch.zeros(1, 3, 32, 32))
