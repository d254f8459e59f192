"""Search spaces: loading, reference points, validity by construction, exact MACs bounds, errors."""
from __future__ import annotations

import hashlib
import random
import textwrap
from pathlib import Path

import optuna
import pytest
from optuna.samplers import RandomSampler
from optuna.trial import FixedTrial

from igcv_nas.arch import zoo
from igcv_nas.arch.cost import count
from igcv_nas.arch.space import (SPACE_DIR, SpaceError, available_spaces, block_dict, load_space,
                                 to_cifar)
from igcv_nas.arch.spec import block_from_dict, from_dict
from igcv_nas.arch.validation import check, complementary, path_counts

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACES = ("igcv2", "igcv3", "mixed", "seesaw")
N_SAMPLES = 1000
MBV2_WIDTHS = tuple(c for _, c, _, _ in zoo.MBV2_TABLE)
MBV2_DEPTHS = tuple(n for _, _, n, _ in zoo.MBV2_TABLE)


@pytest.fixture(scope="module")
def spaces():
    return {name: load_space(name) for name in SPACES}


def _params(widths, depths, **block) -> dict:
    """FixedTrial params: every stage's depth/width and the same block choices everywhere."""
    p = {}
    for i, (w, d) in enumerate(zip(widths, depths)):
        p[f"s{i}.width"], p[f"s{i}.depth"] = w, d
        for j in range(d):
            p.update({f"s{i}.b{j}.{k}": v for k, v in block.items()})
    return p


def _study_samples(space, n: int, seed: int, **kw):
    study = optuna.create_study(sampler=RandomSampler(seed=seed))
    for _ in range(n):
        trial = study.ask()
        yield trial, space.sample(trial, **kw)


def _write(tmp_path, text: str, name: str = "s.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


# ---------------------------------------------------------------------------------------------
# loading

def test_bare_names_resolve_to_search_spaces_dir(spaces):
    assert set(SPACES) <= set(available_spaces())
    for name, sp in spaces.items():
        path = SPACE_DIR / f"{name}.yaml"
        assert sp.source == str(path) and sp.name == name
        assert sp.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert load_space(str(path)).sha256 == sp.sha256  # by path too
        assert sp.target.input_size == 224 and sp.target.num_classes == 1000


def test_unknown_name_lists_the_available_spaces():
    with pytest.raises(SpaceError, match=r"nope: no such search space; accepted: igcv2, igcv3"):
        load_space("nope")


def test_hash_changes_when_the_file_changes(tmp_path):
    text = (SPACE_DIR / "igcv3.yaml").read_text()
    p = _write(tmp_path, text)
    a = load_space(p)
    p.write_text(text.replace("expand: [3, 4, 6]", "expand: [4, 6]"))
    b = load_space(p)
    assert a.sha256 != b.sha256 and b.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    assert b.min_macs() > a.min_macs()  # the cheapest expansion is gone
    p.write_text(text + "\n# a comment\n")
    assert load_space(p).sha256 not in (a.sha256, b.sha256)


# ---------------------------------------------------------------------------------------------
# reference points

def test_igcv3_space_contains_igcv3_d(spaces):
    p = _params(MBV2_WIDTHS, zoo.IGCV3_D_DEPTHS, expand=6, kernel=3, g1=2, g2=2)
    sp = spaces["igcv3"]
    assert sp.sample(FixedTrial(p)).arch_id == zoo.igcv3_d().arch_id == "6635ecf7605a094c"
    assert sp.sample(FixedTrial(p), cifar=True).arch_id == zoo.igcv3_d(cifar=True).arch_id
    assert sp.sample(FixedTrial(p), cifar=True, num_classes=100).arch_id == \
        zoo.igcv3_d(cifar=True, num_classes=100).arch_id


def test_mixed_space_contains_mobilenet_v2(spaces):
    p = _params(MBV2_WIDTHS, MBV2_DEPTHS, kind="mbconv", expand=6, kernel=3)
    spec = spaces["mixed"].sample(FixedTrial(p))
    assert spec.arch_id == zoo.mobilenet_v2().arch_id == "568c7aeed55db9ea"
    assert count(spec).macs == 300_774_272
    assert spaces["mixed"].sample(FixedTrial(p), cifar=True).arch_id == \
        zoo.mobilenet_v2(cifar=True).arch_id


def test_mixed_space_contains_igcv3_blocks(spaces):
    p = _params(MBV2_WIDTHS, MBV2_DEPTHS, kind="igcv3", expand=6, kernel=3, g1=2, g2=2)
    spec = spaces["mixed"].sample(FixedTrial(p))
    # same blocks as IGCV3-D at MobileNetV2's depths
    ref = zoo.igcv3_d().to_dict()
    ref["stages"] = [s[:n] for s, n in zip(ref["stages"], MBV2_DEPTHS)]
    for s, _n in zip(ref["stages"], MBV2_DEPTHS):  # the first block of a stage keeps its in_chs
        for b in s[1:]:
            b["in_chs"] = b["out_chs"]
    assert spec.arch_id == from_dict(ref).arch_id


@pytest.mark.parametrize("c_in,c_out,stride", [(32, 64, 1), (64, 128, 2), (128, 128, 1),
                                               (256, 512, 2), (512, 512, 1), (512, 1024, 2),
                                               (1024, 1024, 1)])
def test_igc_chain_with_L_min_is_zoo_igc_chain(c_in, c_out, stride):
    mine = block_dict("igc", c_in, c_out, stride, {"kernel": 3, "K": 8, "L": "min",
                                                   "residual": False}, "relaxed")
    assert block_from_dict(mine) == block_from_dict(zoo.igc_chain(c_in, c_out, stride))


def test_seesaw_blocks_have_uneven_groups(spaces):
    sp = spaces["seesaw"]
    p = _params(MBV2_WIDTHS, (1, 2, 3, 4, 3, 3, 1), expand=6, kernel=3, g1="1:3", g2="3:5")
    spec = sp.sample(FixedTrial(p))
    b = spec.stages[3][1]  # 64 -> 64, e = 384
    assert b.expand_groups == ((1, 16, 96), (1, 48, 288))
    assert b.project_groups == ((1, 144, 24), (1, 240, 40))
    assert sorted(b.perm_project) == list(range(64)) and b.perm_project != tuple(range(64))
    rep = check(spec)
    assert rep.violations == [] and {c.mode for c in rep.blocks} == {"relaxed"}


def test_to_cifar_matches_the_zoo_cifar_forms():
    for name in zoo.names():
        assert to_cifar(zoo.get(name)).arch_id == zoo.get(name, cifar=True).arch_id, name
        assert to_cifar(zoo.get(name), 100).arch_id == \
            zoo.get(name, cifar=True, num_classes=100).arch_id, name


# ---------------------------------------------------------------------------------------------
# validity by construction and exact MACs bounds

@pytest.mark.parametrize("name", SPACES)
def test_random_samples_are_valid_and_within_macs_bounds(name, spaces):
    sp = spaces[name]
    lo, hi = sp.min_macs(), sp.max_macs()
    dims = sp.dimensions()
    allowed = {"exact"} if sp.complementary == "exact" else {"exact", "relaxed"}
    ids, seen_lo, seen_hi = set(), hi, lo
    for trial, spec in _study_samples(sp, N_SAMPLES, seed=SPACES.index(name)):
        rep = check(spec)
        assert rep.violations == [], (trial.params, rep.violations[:3])
        assert {b.mode for b in rep.blocks} <= allowed
        macs = count(spec).macs
        assert lo <= macs <= hi, trial.params
        seen_lo, seen_hi = min(seen_lo, macs), max(seen_hi, macs)
        for label, dist in trial.distributions.items():  # labels and choices are static
            assert tuple(dist.choices) == dims[label], label
        ids.add(spec.arch_id)
    assert len(ids) == N_SAMPLES  # huge spaces: no repeats
    assert lo < seen_lo and seen_hi < hi  # random samples do not hit the extremes


@pytest.mark.parametrize("name", SPACES)
def test_macs_extremes_are_attained(name, spaces):
    sp = spaces[name]
    for which, macs in (("min", sp.min_macs()), ("max", sp.max_macs())):
        spec = sp.sample(FixedTrial(sp.extreme_params(which)))
        assert count(spec).macs == macs
        assert check(spec).violations == []
    (lo, p_lo), (hi, p_hi) = sp.macs_range(cifar=True)
    assert count(sp.sample(FixedTrial(p_lo), cifar=True)).macs == lo
    assert count(sp.sample(FixedTrial(p_hi), cifar=True)).macs == hi


def test_macs_bounds_of_the_shipped_spaces(spaces):
    got = {n: (s.min_macs(), s.max_macs()) for n, s in spaces.items()}
    assert got == {"igcv2": (31_357_696, 442_068_736), "igcv3": (62_407_696, 872_860_640),
                   "mixed": (39_193_456, 532_855_520), "seesaw": (86_360_464, 608_514_656)}
    ref = count(zoo.igcv3_d()).macs
    assert got["igcv3"][0] < ref < got["igcv3"][1]


@pytest.mark.parametrize("name", SPACES)
def test_cifar_samples_are_valid(name, spaces):
    sp = spaces[name]
    (lo, _), (hi, _) = sp.macs_range(cifar=True)
    for _, spec in _study_samples(sp, 100, seed=7, cifar=True):
        assert spec.input_size == 32 and spec.num_classes == 10 and spec.stem.stride == 1
        assert check(spec).violations == []
        assert lo <= count(spec).macs <= hi


class _Enumerate:
    """Define-by-run trial that follows ``path`` (choice indices) and records the fan-out."""

    def __init__(self, path):
        self.path, self.sizes, self.params = list(path), [], {}

    def suggest_categorical(self, name, choices):
        k = len(self.sizes)
        if k == len(self.path):
            self.path.append(0)
        self.sizes.append(len(choices))
        self.params[name] = choices[self.path[k]]
        return self.params[name]


def _enumerate(space):
    """Every point of a define-by-run space once: depth-first over choice-index prefixes."""
    stack = [[]]
    while stack:
        prefix = stack.pop()
        trial = _Enumerate(prefix)
        yield trial.params, space.sample(trial)
        for k in range(len(prefix), len(trial.path)):  # choices made by default (index 0)
            stack.extend(trial.path[:k] + [alt] for alt in range(1, trial.sizes[k]))


TINY = """
    complementary: relaxed
    target: {input_size: 32, num_classes: 10}
    stem: {out_chs: 16, kernel: 3, stride: 2}
    head_chs: 64
    block:
      kind: [igcv3, mbconv, dwsep, igc]
      expand: [2, 3]
      kernel: 3
      g1: [2, [1, 3]]
      g2: 2
      K: 4
      L: [min, min+1]
      residual: true
    stages:
      - {width: [16, 32], depth: 1, stride: 1, kernel: [3, 5]}
      - {width: [16, 32], depth: [1, 2], stride: 2}
"""


def test_macs_bounds_equal_brute_force_enumeration(tmp_path):
    sp = load_space(_write(tmp_path, TINY))
    points = list(_enumerate(sp))
    assert len(points) == sp.size() == 2 * 18 * 2 * (9 + 9 * 9)
    assert len({tuple(sorted(p.items())) for p, _ in points}) == len(points)
    macs = [count(spec).macs for _, spec in points]
    assert (min(macs), max(macs)) == (sp.min_macs(), sp.max_macs())
    assert len({spec.arch_id for _, spec in points}) == len(points)
    for _, spec in points[::50]:
        assert check(spec).violations == []


def test_reduced_chain_keeps_path_counts():
    """complementary() works on an equivalent smaller chain; compare with the full product."""
    rng = random.Random(0)
    cases = []
    for c_in, c_out in [(16, 32), (24, 40), (32, 32), (64, 96), (48, 48)]:
        for g1 in (1, 2, 4, "1:3", "3:5"):
            for g2 in (1, 2, 8, "1:1", "1:3"):
                cases.append(("igcv3", c_in, c_out, {"expand": rng.choice([1, 3, 6]), "g1": g1,
                                                     "g2": g2, "kernel": 3}))
        for k in (4, 8, 16):
            for L in ("min", "min+1", 2):
                cases.append(("igc", c_in, c_out, {"kernel": 3, "K": k, "L": L,
                                                   "residual": False}))
    modes = set()
    for kind, c_in, c_out, ch in cases:
        try:
            b = block_from_dict(block_dict(kind, c_in, c_out, 1, ch, "none"))
        except ValueError:
            continue
        counts = path_counts(b.ops)
        lo, hi = int(counts.min()), int(counts.max())
        mode = "violated" if lo == 0 else "exact" if hi == 1 else "relaxed"
        got = complementary(b.ops)
        assert got[0] == mode and got[2:] == (lo, hi), (kind, c_in, c_out, ch)
        if got[1] is not None:
            assert counts[got[1]] == 0
        modes.add(mode)
    assert modes == {"exact", "relaxed", "violated"}


def test_exact_space_samples_are_exact(tmp_path):
    # igc chains 64 -> 64 with K = 8: 8 * 8 = 64, one path per pair; dwsep is exact too
    sp = load_space(_write(tmp_path, """
        complementary: exact
        target: {input_size: 32, num_classes: 10}
        stem: {out_chs: 64, stride: 1}
        head_chs: 0
        block: {kind: [igc, dwsep], K: 8, kernel: [3, 5]}
        stages:
          - {width: 64, depth: [1, 2, 3], stride: 1}
          - {width: 64, depth: [1, 2], stride: 2}
    """))
    for _, spec in _study_samples(sp, 50, seed=0):
        rep = check(spec)
        assert rep.violations == [] and rep.mode == "exact"


# ---------------------------------------------------------------------------------------------
# bad files: one-line SpaceError naming file, key and value

GOOD_STAGES = """
stages:
  - {width: [16, 24], depth: [1, 2], stride: 2}
"""
HEAD = """
complementary: relaxed
stem: {out_chs: 32}
"""


@pytest.mark.parametrize("text,expect", [
    ("stages: [\n", "malformed YAML at line"),
    ("- 1\n- 2\n", "top level: expected a mapping"),
    (HEAD + "widht: 3\n" + GOOD_STAGES, "unknown key 'widht'; accepted: format"),
    ("stem: {out_chs: 32}\nblock: {kind: igcv3}\n" + GOOD_STAGES,
     "missing key 'complementary'; accepted: exact | relaxed"),
    (HEAD.replace("relaxed", "dense") + "block: {kind: igcv3}\n" + GOOD_STAGES,
     "complementary='dense' is not accepted; expected exact | relaxed"),
    (HEAD + GOOD_STAGES, "stages[0]: missing key 'kind'"),
    (HEAD + "block: {kind: conv}\n" + GOOD_STAGES,
     "block.kind='conv' is not accepted; expected igc | igcv3 | mbconv | dwsep"),
    (HEAD + "block: {kind: igcv3, g1: []}\n" + GOOD_STAGES, "block.g1=[] has no choices"),
    (HEAD + "block: {kind: igcv3, kernel: [3, 4]}\n" + GOOD_STAGES,
     "block.kernel=4 is not accepted; expected an odd integer >= 1"),
    (HEAD + "block: {kind: igcv3, expand: [6, 6]}\n" + GOOD_STAGES,
     "block.expand: choice 6 is listed twice"),
    (HEAD + "block: {kind: igcv3, g2: [[3]]}\n" + GOOD_STAGES,
     "block.g2=[3] is not accepted; expected an integer >= 1 (even groups) or a ratio"),
    (HEAD + "block: {kind: igc, L: [max]}\n" + GOOD_STAGES, "block.L='max' is not accepted"),
    (HEAD + "block: {kind: igcv3}\nstages:\n  - {width: [16, 24], depth: [], stride: 2}\n",
     "stages[0].depth=[] has no choices"),
    (HEAD + "block: {kind: igcv3}\nstages:\n  - {width: 16, depth: 1, stride: [1, 2]}\n",
     "stages[0].stride=[1, 2] is not accepted; expected an integer >= 1"),
    (HEAD + "block: {kind: igcv3}\nstages:\n  - {width: 16, depth: 1, depht: 2}\n",
     "stages[0]: unknown key 'depht'"),
    (HEAD + "block: {kind: mbconv}\nstages:\n  - {width: 16, depth: 1, g1: 2}\n",
     "stages[0].g1: not used by kind ['mbconv']"),
    (HEAD + "block: {kind: mbconv, K: 8}\n" + GOOD_STAGES, "block.K: not used by any stage"),
    (HEAD + "stages: []\n", "stages=[] is not accepted"),
    (HEAD + "target: {input_size: 30}\nblock: {kind: dwsep}\n" + GOOD_STAGES,
     "stages[0].stride=2 does not divide the resolution 15"),
    # combinations that cannot be built or are not complementary
    (HEAD + "block: {kind: igcv3, expand: 1, g1: [[3, 5]]}\nstages:\n"
            "  - {width: 20, depth: 1, stride: 1}\n  - {width: 16, depth: 1, stride: 2}\n",
     "stages[1]: igcv3 block 20->16 with expand=1, g1=[3, 5], g2=2 cannot be built: ratio [3, 5] "
     "(sum 8) must divide both channel counts of the 20->20 conv"),
    (HEAD + "block: {kind: igcv3, expand: 1, g1: [4, 8], g2: [8]}\n" + GOOD_STAGES,
     "stages[0]: igcv3 block 32->16 with expand=1, g1=8, g2=8 cannot be built"),
    (HEAD + "block: {kind: igc, K: [8, 16], L: [2, 3]}\n" + GOOD_STAGES,
     "stages[0]: igc block 32->16 with K=8, L=2 violates the complementary condition "
     "(output channel"),
    (HEAD.replace("relaxed", "exact") + "block: {kind: [dwsep, mbconv]}\n" + GOOD_STAGES,
     "stages[0]: mbconv block 32->16 with expand=6 is only relaxed-complementary"),
])
def test_bad_files_raise_one_line_space_error(tmp_path, text, expect):
    p = _write(tmp_path, text, "bad.yaml")
    with pytest.raises(SpaceError) as e:
        load_space(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and "\n" not in msg
    assert expect in msg, msg


def test_missing_file_is_a_space_error(tmp_path):
    with pytest.raises(SpaceError, match="cannot read search-space file"):
        load_space(tmp_path / "missing.yaml")


# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", SPACES)
def test_all_samples_valid_uncached(name, spaces):
    """As test_random_samples_are_valid_and_within_macs_bounds, with the real (unmemoized)
    complementary check: ~100 s for igcv2 (wide channel-wise chains), ~6 s for the others."""
    sp = spaces[name]
    for _, spec in _study_samples(sp, N_SAMPLES, seed=100 + SPACES.index(name)):
        assert check(spec).violations == []


def test_cifar_form_strides_are_checked_when_asked_for(tmp_path):
    stages = "".join("  - {width: 16, depth: 1, stride: 2}\n" for _ in range(7))
    text = ("complementary: exact\ntarget: {input_size: 256}\nstem: {out_chs: 16}\n"
            "block: {kind: dwsep}\nstages:\n" + stages)
    sp = load_space(_write(tmp_path, text))
    assert check(sp.sample(FixedTrial({}))).violations == []  # 256 -> 1
    with pytest.raises(SpaceError, match=r"stages\[6\].stride=2 does not divide the resolution 1 "
                                         r"\(CIFAR form\)"):
        sp.sample(FixedTrial({}), cifar=True)


@pytest.mark.parametrize("name", ["igcv3", "mixed", str(Path(__file__).parent / "spaces" /
                                                         "small.yaml")])
def test_params_range_is_exact_and_attained(name):
    """The DP's extremes are attained by the trial params it returns and bound 500 samples."""
    import numpy as np
    import optuna

    from igcv_nas.arch.cost import count
    sp = load_space(name)
    (lo, p_lo), (hi, p_hi) = sp.params_range()
    assert count(sp.sample(optuna.trial.FixedTrial(p_lo))).params == lo
    assert count(sp.sample(optuna.trial.FixedTrial(p_hi))).params == hi
    rng = np.random.default_rng(0)

    class Uniform:
        def suggest_categorical(self, name, choices):
            return choices[int(rng.integers(len(choices)))]
    seen = [count(sp.sample(Uniform())).params for _ in range(500)]
    assert lo <= min(seen) and max(seen) <= hi
    (lo10, p10), _ = sp.params_range(num_classes=10)
    from igcv_nas.arch.space import to_cifar
    assert count(to_cifar(sp.sample(optuna.trial.FixedTrial(p10)), 10)).params == lo10
