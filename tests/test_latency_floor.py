"""The space's latency floor (igcv_nas.evaluate.latency.min_latency_ms) against brute-force
enumeration of every sample of a small space: exact for the LUT sum and for the learned predictor
with a constant neighbour factor, a lower bound with a fitted neighbour model. No torch, no
timing."""
from __future__ import annotations

import hashlib

import pytest

from igcv_nas.evaluate.latency import LUT, MissingKey, min_latency_ms, network_keys
from igcv_nas.evaluate.latency_model import LearnedPredictor, context_features
from igcv_nas.arch.space import load_space

# stage 1 mixes igcv3 (expand x g1) and mbconv (expand) blocks, stage 2 dwsep and mbconv with
# two kernels; stem stride 2, so the CIFAR form differs (stem stride 1, stage 1 not strided)
SPACE = """\
format: igcv-nas/space@1
name: floor
complementary: relaxed
target: {input_size: 64, num_classes: 10}
act: relu
stem: {out_chs: 16, kernel: 3, stride: 2}
head_chs: 64
block: {kind: [igcv3, mbconv], expand: [2, 4], kernel: 3, g1: [1, 2], g2: 2}
stages:
  - {width: 16, depth: 1, stride: 1, kind: igcv3, expand: 1, g1: 1}
  - {width: [16, 24], depth: [1, 2], stride: 2}
  - {width: 32, depth: [1, 2], stride: 2, kind: [dwsep, mbconv], kernel: [3, 5], expand: 2}
"""


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    p = tmp_path_factory.mktemp("space") / "floor.yaml"
    p.write_text(SPACE)
    return load_space(p)


def all_samples(sp, **kw):
    """Every sample of ``sp``, once each: define-by-run enumeration of the trial's answers."""
    class Trial:
        """Answers ``prefix`` (choice indices, in asking order), then the first choice;
        records how many choices every question had."""

        def __init__(self, prefix: list[int]):
            self.prefix, self.sizes = prefix, []

        def suggest_categorical(self, label, choices):
            i = len(self.sizes)
            self.sizes.append(len(choices))
            return choices[self.prefix[i]] if i < len(self.prefix) else choices[0]

    stack: list[list[int]] = [[]]
    while stack:
        prefix = stack.pop()
        trial = Trial(prefix)
        yield sp.sample(trial, **kw)
        sizes = trial.sizes
        for j in range(len(prefix), len(sizes)):
            stack += [prefix + [0] * (j - len(prefix)) + [a] for a in range(1, sizes[j])]


def at(spec, target, cifar):
    return spec.with_target(*target, cifar=cifar) if target else spec


def _ms(key: str) -> float:
    """A fixed pseudo-random latency per key (no structure for the floor to exploit)."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2 ** 32 + 0.01


def _lut(keys, scale=1.3, offset=-0.2) -> LUT:
    lut = LUT("cpu", threads=1, statistic="min")
    for k in keys:
        lut.entries[k] = {"ms": 9.0, "p90": 9.0, "min": _ms(k), "stable": 9.0, "spread": 0.0}
    lut.correction = {"scale": scale, "offset_ms": offset, "points": 3}
    return lut


FORMS = [(None, False), ((32, 10), True), ((96, 100), False)]


@pytest.mark.parametrize("target,cifar", FORMS)
def test_lut_floor_is_the_exact_minimum_over_every_sample(space, target, cifar):
    specs = [at(s, target, cifar) for s in all_samples(space)]
    assert len(specs) == space.size() == 2 * (6 + 36) * (4 + 16)
    keys = {k for s in specs for k in network_keys(s)}
    lut = _lut(keys)
    best = min(lut.predict(s) for s in specs)
    assert min_latency_ms(space, lut, target, cifar) == pytest.approx(best, rel=1e-12, abs=0)
    assert min_latency_ms(space, lut, target, cifar, missing="raise") == pytest.approx(
        best, rel=1e-12, abs=0)


def test_lut_floor_counts_missing_pieces_as_zero_or_refuses(space):
    specs = list(all_samples(space))
    keys = sorted({k for s in specs for k in network_keys(s)})
    lut = _lut(keys[::2])  # half the pieces unmeasured
    floor = min_latency_ms(space, lut)
    brute = min(1.3 * sum(lut.entries[k]["min"] if k in lut.entries else 0.0
                          for k in network_keys(s)) - 0.2 for s in specs)
    assert floor == pytest.approx(brute, rel=1e-12, abs=0)
    full = _lut(keys)  # whatever the missing pieces measure (>= 0), no network goes below
    assert floor <= min(full.predict(s) for s in specs)
    with pytest.raises(MissingKey, match="latency LUT has no entry for"):
        min_latency_ms(space, lut, missing="raise")


CONFIG = {"piece": {"n_estimators": 50}, "context": {"n_estimators": 30}, "min_context_rows": 30}


def _learned(space_keys, context: bool) -> tuple[LUT, LearnedPredictor]:
    """A predictor whose piece model is fitted on every other key (the rest are priced by
    it); with ``context`` a neighbour model fitted on synthetic in-context rows."""
    lut = _lut(space_keys[::2])
    lut.learned_config = CONFIG
    lp = LearnedPredictor.fit(lut, **CONFIG)
    if context:
        nets = [space_keys[i:i + 6] for i in range(0, 60, 6)]
        lut.calibration = [{"arch_id": f"n{j}", "sum_ms": 1.0, "measured_ms": 1.2, "keys": ks,
                            "pieces_ms": [_ms(k) for k in ks],
                            # faster in context for mbconv blocks (own feature), and by
                            # position (a context feature)
                            "context_ms": [_ms(k) * (0.7 if " mbconv " in k else 1.0)
                                           * (1 + 0.1 * (i % 3)) for i, k in enumerate(ks)],
                            "spread": 0.0}
                           for j, ks in enumerate(nets)]
        lp = LearnedPredictor.fit(lut, **CONFIG)
        assert lp.context is not None
    else:
        lp.context_constant, lp.scale = -0.1, 1.1
    return lut, lp


def test_learned_floor_with_a_constant_neighbour_factor_is_exact(space):
    specs = list(all_samples(space))
    keys = sorted({k for s in specs for k in network_keys(s)})
    _, lp = _learned(keys, context=False)
    assert lp.context is None
    best = min(lp.predict(s) for s in specs)
    assert min_latency_ms(space, lp) == pytest.approx(best, rel=1e-12, abs=0)


def test_learned_floor_with_a_neighbour_model_is_a_lower_bound(space):
    specs = list(all_samples(space))
    keys = sorted({k for s in specs for k in network_keys(s)})
    lut, lp = _learned(keys, context=True)
    from igcv_nas.evaluate.latency_model import CONTEXT_FEATURES, _matrix
    rows = [context_features(network_keys(s), i) for s in specs[::50]
            for i in range(len(network_keys(s)))]
    h = lp.context.predict(_matrix(rows, CONTEXT_FEATURES))
    low = lp.min_log_factors([keys_s[i] for keys_s in (network_keys(s) for s in specs[::50])
                              for i in range(len(keys_s))])
    assert len(low) == len(h) and all(lo <= v for lo, v in zip(low, h))
    assert len({round(lo, 9) for lo in low}) > 1  # per piece: its own features are followed
    floor = min_latency_ms(space, lp)
    best = min(lp.predict(s) for s in specs)
    assert 0 < floor <= best
    # the same bound from the LUT the predictor is fitted on (its learned(): the same fit)
    assert min_latency_ms(space, lut, method="learned") == floor
