from __future__ import annotations

import math

import pytest
import torch

from igcv_nas.build import build_model
from igcv_nas.spec import from_dict
from igcv_nas.zero_cost import PROXIES, score, score_all


def _net(width: int = 16):
    from igcv_nas.zoo import igcv3_block
    torch.manual_seed(0)
    return build_model(from_dict({
        "name": "z", "input_size": 32, "num_classes": 10, "act": "relu",
        "stem": {"out_chs": width, "kernel": 3, "stride": 2},
        "stages": [[igcv3_block(width, width, 1, 2)], [igcv3_block(width, 2 * width, 2, 4)]],
        "head_chs": 0, "dropout": 0.0}))


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g)


def test_all_proxies_give_finite_scores(batch):
    s = score_all(_net(), *batch)
    assert set(s) == set(PROXIES) and all(math.isfinite(v) for v in s.values())


def test_synflow_grows_with_width(batch):
    # all-positive parameters and inputs: more channels, more paths, larger synaptic flow
    # log10 scale: at least twice the flow
    assert score("synflow", _net(32), *batch) > score("synflow", _net(16), *batch) + math.log10(2)


def test_naswot_is_singular_for_identical_images(batch):
    x, y = batch
    same = x[:1].repeat(8, 1, 1, 1)
    assert score("naswot", _net(), same) == float("-inf")
    assert math.isfinite(score("naswot", _net(), x[:8]))


def test_grad_norm_needs_labels_and_scales_with_loss(batch):
    with pytest.raises(ValueError, match="needs labels"):
        score("grad_norm", _net(), batch[0])
    assert score("grad_norm", _net(), *batch) > 0


def test_scoring_leaves_the_model_untouched(batch):
    m = _net()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    score_all(m, *batch)
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in m.parameters())


def test_unknown_proxy():
    with pytest.raises(ValueError, match="unknown zero-cost proxy 'jacov'"):
        score("jacov", _net(), torch.zeros(1, 3, 32, 32))
