from __future__ import annotations

import random

import numpy as np
import pytest

from igcv_nas.arch import perm, zoo
from igcv_nas.arch.spec import ConvOp, from_dict, make_runs
from igcv_nas.arch.validation import ValidationError, check, complementary, path_counts, validate


def _chain(c: int, groups: list, perms: list) -> list[ConvOp]:
    return [ConvOp(c, c, 1, 1, make_runs(g, c, c, "t"), True, p) for g, p in zip(groups, perms)]


def _dense_paths(ops) -> np.ndarray:
    """Brute force: multiply full 0/1 connectivity and permutation matrices."""
    total = np.eye(ops[0].in_chs, dtype=np.int64)
    for op in ops:
        m = np.zeros((op.out_chs, op.in_chs), dtype=np.int64)
        i0 = o0 = 0
        for count, gi, go in op.groups:
            for _ in range(count):
                m[o0:o0 + go, i0:i0 + gi] = 1
                i0, o0 = i0 + gi, o0 + go
        total = m @ total
        if op.perm is not None:
            total = total[list(op.perm)]
    return total


def test_exact_when_group_sizes_multiply_to_c_and_perm_interleaves():
    # C = 12: K_1 = 4 (3 groups), interleave(12, 3), K_2 = 3 (4 groups): 4 * 3 = 12 -> one path each
    ops = _chain(12, [3, 4], [perm.interleave(12, 3), None])
    assert complementary(ops) == ("exact", None, 1, 1)


def test_identity_permutation_gives_block_diagonal_product():
    ops = _chain(12, [3, 4], [None, None])
    mode, example, lo, hi = complementary(ops)
    assert mode == "violated" and lo == 0
    o, i = example
    assert _dense_paths(ops)[o, i] == 0
    assert example == (0, 4)  # output 0 sees inputs 0..3 only


def test_relaxed_when_product_exceeds_c():
    # K_1 = 6, K_2 = 6: 36 > 12 -> every pair has 3 paths
    ops = _chain(12, [2, 2], [perm.interleave(12, 2), None])
    assert complementary(ops) == ("relaxed", None, 3, 3)


def test_three_layer_digit_rotation_is_exact():
    # C = 64 = 4 * 4 * 4: interleave by the previous conv's 16 groups rotates base-4 digits
    ops = _chain(64, [16, 16, 16], [perm.interleave(64, 16), perm.interleave(64, 16), None])
    assert complementary(ops)[0] == "exact"


def test_group_level_path_counts_equal_brute_force_on_random_chains():
    rng = random.Random(7)
    for _ in range(200):
        c = rng.choice([8, 12, 16, 24])
        n_layers = rng.randint(2, 4)
        ops = []
        for _ in range(n_layers):
            sizes, left = [], c
            while left:
                s = rng.choice([d for d in range(1, left + 1) if left % d == 0 or d == left])
                sizes.append(s)
                left -= s
            runs = [[1, s, s] for s in sizes]
            p = list(range(c))
            rng.shuffle(p)
            ops.append(ConvOp(c, c, 1, 1, make_runs(runs, c, c, "t"), True,
                              tuple(p) if rng.random() < 0.8 else None))
        assert np.array_equal(path_counts(ops), _dense_paths(ops))


def test_channel_changing_chain_equals_brute_force():
    ops = [ConvOp(8, 24, 1, 1, make_runs(2, 8, 24, "t"), False, perm.interleave(24, 2)),
           ConvOp(24, 24, 3, 1, make_runs(24, 24, 24, "t"), True, None),
           ConvOp(24, 16, 1, 1, make_runs(2, 24, 16, "t"), False, perm.interleave(16, 2))]
    assert np.array_equal(path_counts(ops), _dense_paths(ops))
    assert complementary(ops) == ("relaxed", None, 6, 6)


def test_every_violation_is_reported_with_block_and_layer(tiny):
    b = tiny["stages"][0][0]
    b["in_chs"] = 8
    b["layers"][0]["stride"] = 3           # 4x4 map not divisible by 3
    b["layers"][1]["kernel"] = 3           # later igc layers must be 1x1
    b["layers"][1]["perm"] = [0, 1, 2, 3, 4, 5, 6, 6]  # not a permutation
    b["residual"] = True                   # but stride 3
    spec = from_dict(tiny)
    rep = check(spec)
    text = [str(v) for v in rep.violations]
    assert text == [
        "s0.b0.layer1: kernel=3 stride=1: "
        "only the first layer of an igc chain may be spatial or strided",
        "s0.b0: residual needs stride 1 and in_chs == out_chs (stride 3, 8->8)",
        "s0.b0.layer0: stride=3 does not divide the input resolution 4",
        "s0.b0.layer1: not a permutation of 0..7 (index 6 out of range or repeated)",
    ]
    assert rep.blocks[0].mode is None
    with pytest.raises(ValidationError, match="^4 violations: s0.b0.layer1: kernel=3"):
        validate(spec)


def test_chaining_and_group_sums_are_checked(tiny):
    tiny["stem"]["out_chs"] = 16
    tiny["stages"][0][0]["layers"][1]["perm"] = list(range(7))
    rep = check(from_dict(tiny))
    assert [str(v) for v in rep.violations] == [
        "s0.b0: in_chs=8 but the previous layer gives 16 channels",
        "s0.b0.layer1: permutation has length 7, expected 8",
    ]


def test_non_complementary_block_is_a_violation_unless_require_none(tiny):
    tiny["stages"][0][0]["layers"][0]["perm"] = None
    # groups of 4, then groups of 4: block diagonal
    tiny["stages"][0][0]["layers"][0]["groups"] = 2
    rep = check(from_dict(tiny))
    assert rep.blocks[0].mode == "violated"
    assert [str(v) for v in rep.violations] == [
        "s0.b0: complementary condition violated: output channel 0 has no path to input channel 4 "
        "(require=relaxed)"]
    tiny["stages"][0][0]["require"] = "none"
    rep = check(from_dict(tiny))
    assert rep.ok and rep.mode == "violated"


def test_require_exact_rejects_relaxed(tiny):
    # channel-wise 3x3 then 1x1 with 2 groups of 4: each output reaches 4 of 8 inputs -> violated;
    # with interleave and groups of 4 and 2 (K = 1, 4, then 2 -> product 8) it is exact
    tiny["stages"][0][0]["layers"] = [
        {"out_chs": 8, "kernel": 3, "stride": 1, "groups": 8, "act": False},
        {"out_chs": 8, "kernel": 1, "stride": 1, "groups": 2, "act": False,
         "perm": {"scheme": "interleave", "groups": 2}},
        {"out_chs": 8, "kernel": 1, "stride": 1, "groups": 4, "act": True},
    ]
    tiny["stages"][0][0]["require"] = "exact"
    rep = check(from_dict(tiny))
    assert rep.ok and rep.blocks[0].mode == "exact"
    tiny["stages"][0][0]["layers"][2]["groups"] = 1   # K_3 = 8 -> 4 paths per pair
    rep = check(from_dict(tiny))
    assert rep.blocks[0].mode == "relaxed"
    assert [str(v) for v in rep.violations] == [
        "s0.b0: complementary condition is relaxed, not exact: some (out, in) pairs have 4 paths "
        "(require=exact)"]


def test_balance_condition_reported_not_required(tiny):
    rep = check(from_dict(tiny))
    # S*K_1 = 9 * 2, K_2 = 4 -> 18 / 4; exact nonetheless
    assert rep.blocks[0].balance == pytest.approx(18 / 4)
    assert rep.ok and rep.blocks[0].mode == "exact"


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v1", "igcv3_d", "igcv2",
                                  "igcv3_d_0.7_cifar", "igcv2_0.5_cifar"])
def test_zoo_networks_are_valid(name):
    rep = validate(zoo.get(name))
    assert rep.mode in ("exact", "relaxed")


def test_dwsep_is_exact_and_mbconv_relaxed():
    v1 = check(zoo.mobilenet_v1())
    assert {b.mode for b in v1.blocks} == {"exact"}
    v2 = check(zoo.mobilenet_v2())
    # 16 * 6 expanded channels
    assert v2.blocks[1].mode == "relaxed" and v2.blocks[1].max_paths == 96


def test_resolution_after_a_stride_that_does_not_divide_rounds_up(tiny):
    # 9x9 input, stem stride 2: the stem's conv gives 5x5 (padding 1), as cost and build count
    # it, so the next stride is checked against 5, not 4
    tiny["input_size"] = 9
    tiny["stages"][0][0]["layers"][0]["stride"] = 2
    rep = check(from_dict(tiny))
    assert [str(v) for v in rep.violations] == [
        "stem: stride=2 does not divide the input resolution 9",
        "s0.b0.layer0: stride=2 does not divide the input resolution 5"]
