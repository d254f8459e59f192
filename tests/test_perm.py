from __future__ import annotations

import pytest

from igcv_nas.arch import perm


def test_interleave_test_vectors():
    # IGCV.md test vectors (ShuffleNet channel shuffle)
    assert perm.interleave(12, 2) == (0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11)
    assert perm.interleave(12, 3) == (0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11)


@pytest.mark.parametrize("c,g", [(12, 2), (12, 3), (24, 4), (96, 8), (16, 16)])
def test_shuffle_g_is_undone_by_shuffle_c_over_g(c, g):
    p, q = perm.interleave(c, g), perm.interleave(c, c // g)
    # y = x[p], z = y[q]  ->  z[i] = x[p[q[i]]]
    assert [p[q[i]] for i in range(c)] == list(range(c))


def test_stride_is_every_kth_channel():
    assert perm.stride(8, 2) == (0, 2, 4, 6, 1, 3, 5, 7)
    assert perm.stride(9, 3) == (0, 3, 6, 1, 4, 7, 2, 5, 8)


def test_interleave_rejects_non_divisor():
    with pytest.raises(ValueError, match="groups=5 must divide channels=12"):
        perm.interleave(12, 5)


def test_complement_even_is_interleave():
    assert perm.complement([4, 4, 4], [3, 3, 3, 3]) == perm.interleave(12, 3)


def test_complement_uneven_connects_every_pair_in_proportion():
    prev, nxt = [8, 24], [16, 16]
    p = perm.complement(prev, nxt)
    assert sorted(p) == list(range(32))
    first = [0 if ch < 8 else 1 for ch in p[:16]]
    second = [0 if ch < 8 else 1 for ch in p[16:]]
    # 8 : 24 = 1 : 3 of each later group
    assert first.count(0) == 4 and first.count(1) == 12
    assert second.count(0) == 4 and second.count(1) == 12


def test_complement_falls_back_to_transport_table():
    # the proportional deal would fill the first later group (2 channels) from the big
    # earlier group only; the transport table gives it one channel of each
    prev, nxt = [2, 30], [2, 30]
    p = perm.complement(prev, nxt)
    assert sorted(p) == list(range(32))
    assert p[:2] == (0, 2)
    assert {0 if ch < 2 else 1 for ch in p[2:]} == {0, 1}


def test_complement_infeasible_names_the_sizes():
    with pytest.raises(ValueError, match="every later group needs >= 3 channels"):
        perm.complement([4, 4, 4], [2] * 6)


def test_interleave_groups_detects_shuffles_only():
    assert perm.interleave_groups(perm.interleave(24, 4)) == 4
    assert perm.interleave_groups(perm.complement([8, 24], [16, 16])) is None
    assert perm.interleave_groups((1, 0, 2, 3)) is None


def test_resolve_schemes():
    assert perm.resolve({"scheme": "identity"}, 4) == (0, 1, 2, 3)
    assert perm.resolve({"scheme": "shuffle", "groups": 2}, 4) == (0, 2, 1, 3)
    assert perm.resolve({"scheme": "stride", "k": 2}, 4) == (0, 2, 1, 3)
    assert perm.resolve({"scheme": "custom", "indices": [3, 2, 1, 0]}, 4) == (3, 2, 1, 0)
    with pytest.raises(ValueError, match="unknown permutation scheme 'spiral'"):
        perm.resolve({"scheme": "spiral"}, 4)
