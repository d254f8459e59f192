"""The analytic cost model against fvcore on sampled architectures of every shipped space."""
from __future__ import annotations

import optuna
import pytest
from optuna.samplers import RandomSampler

from igcv_nas.nn.build import build_model
from igcv_nas.arch.cost import count
from igcv_nas.artifacts.crosscheck import fvcore_macs, n_params
from igcv_nas.arch.space import available_spaces, load_space

pytestmark = pytest.mark.integration  # fvcore traces of 200 nets per shipped space

optuna.logging.set_verbosity(optuna.logging.WARNING)
N = 200  # per space; ~0.3 s each on 2 cores (fvcore's trace dominates)


@pytest.mark.parametrize("name", available_spaces())
def test_sampled_architectures_equal_fvcore_to_the_integer(name):
    sp = load_space(name)
    study = optuna.create_study(sampler=RandomSampler(seed=11))
    seen = set()
    for i in range(N):
        spec = sp.sample(study.ask())
        seen.add(spec.arch_id)
        model = build_model(spec)
        c = count(spec)
        assert n_params(model) == c.params, (i, spec.arch_id)
        assert fvcore_macs(model, spec.input_size) == c.macs, (i, spec.arch_id)
    assert len(seen) == N  # distinct architectures, not one counted N times
