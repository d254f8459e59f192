"""Channel permutations: named schemes resolved to explicit index lists.

Convention (gather): a permutation ``p`` of length C maps a tensor ``x`` to ``y`` with
``y[i] = x[p[i]]`` along the channel axis. Every permutation in a spec is stored this way,
so ``torch.index_select(x, 1, p)`` applies it and anyone can verify it.

Schemes a search space or a hand-written spec may name:

* ``identity``            -- ``[0, 1, ..., C-1]``.
* ``interleave`` (G)      -- ShuffleNet channel shuffle: view (G, C/G), transpose, flatten.
                             ``interleave(12, 2) == [0,6,1,7,2,8,3,9,4,10,5,11]``.
* ``stride`` (k)          -- take every k-th channel, then wrap:
                             ``stride(C, k) == interleave(C, C // k)``.
* ``complement``          -- the "deal" between two group convolutions (even or uneven groups):
                             every group of the later conv receives channels from every group of
                             the earlier one, so the pair is complementary (exactly when each
                             later group holds one channel of each earlier group).
* ``custom``              -- an explicit list.

Pure Python: no torch, no numpy.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..errors import InputError
from ..units import MAX_CHANNELS, show

Runs = tuple[tuple[int, int, int], ...]  # (count, in_per_group, out_per_group)


def identity(c: int) -> tuple[int, ...]:
    return tuple(range(c))


def interleave(c: int, g: int) -> tuple[int, ...]:
    """ShuffleNet channel shuffle with ``g`` groups (``g`` must divide ``c``)."""
    if g <= 0 or c % g:
        raise InputError(f"interleave: groups={g} must divide channels={c}")
    k = c // g
    return tuple((i % g) * k + i // g for i in range(c))


def stride(c: int, k: int) -> tuple[int, ...]:
    """Every k-th channel, wrapping around: ``[0, k, 2k, ..., 1, k+1, ...]`` (``k`` divides
    ``c``)."""
    if k <= 0 or c % k:
        raise InputError(f"stride: k={k} must divide channels={c}")
    return interleave(c, c // k)


def expand_runs(runs: Sequence[Sequence[int]], side: int) -> list[int]:
    """Sizes of each group on one side (1 = input, 2 = output) from run-length group runs."""
    out: list[int] = []
    for r in runs:
        out.extend([r[side]] * r[0])
    return out


def complement(prev_sizes: Sequence[int], next_sizes: Sequence[int]) -> tuple[int, ...]:
    """Permutation that makes two consecutive group convolutions complementary.

    ``prev_sizes``: channels per output group of the earlier conv (sum C);
    ``next_sizes``: channels per input group of the later conv (sum C).

    First try a proportional deal: order all channels by their fractional position inside their
    group, ``(r + 0.5) / size`` (ties by group), and cut the order into the later groups. For even
    groups this is exactly ``interleave(C, len(prev_sizes))``; for uneven groups each later group
    receives channels from the earlier groups in proportion to their sizes. If some pair of groups
    would then stay unconnected, fall back to a transport table T[i][j] >= 1 (one channel per pair,
    the rest filled north-west corner first). Raises ValueError when no deal exists: a later group
    smaller than the number of earlier groups, or an earlier group smaller than the number of
    later groups.
    """
    m, n = len(prev_sizes), len(next_sizes)
    if sum(prev_sizes) != sum(next_sizes):
        raise InputError("complement: channel counts differ "
                         f"({sum(prev_sizes)} vs {sum(next_sizes)})")
    if min(next_sizes) < m or min(prev_sizes) < n:
        raise InputError(
            f"complement: cannot connect {m} groups {list(prev_sizes)[:8]} to {n} groups "
            f"{list(next_sizes)[:8]}: every later group needs >= {m} channels and every earlier "
            f"group >= {n}")
    starts, acc = [], 0
    for a in prev_sizes:
        starts.append(acc)
        acc += a
    if len(set(prev_sizes)) == 1:  # even groups: the proportional order is the interleave
        order = list(interleave(sum(prev_sizes), m))
    else:
        keyed = sorted(((2 * r + 1) / (2 * a), i, starts[i] + r)
                       for i, a in enumerate(prev_sizes) for r in range(a))
        order = [ch for _, _, ch in keyed]
    group_of = [i for i, a in enumerate(prev_sizes) for _ in range(a)]
    pos, ok = 0, True
    for b in next_sizes:
        if len({group_of[ch] for ch in order[pos:pos + b]}) < m:
            ok = False
            break
        pos += b
    if ok:
        return tuple(order)
    rows = [a - n for a in prev_sizes]
    cols = [b - m for b in next_sizes]
    table = [[1] * n for _ in range(m)]
    i = j = 0
    while i < m and j < n:
        t = min(rows[i], cols[j])
        table[i][j] += t
        rows[i] -= t
        cols[j] -= t
        if rows[i] == 0:
            i += 1
        else:
            j += 1
    nxt = list(starts)
    perm: list[int] = []
    for j in range(n):
        # round-robin over the earlier groups still owed channels: round r takes one channel of
        # every group i with table[i][j] > r, in group order (O(C log C), not O(C * m))
        for _, g in sorted((r, i) for i in range(m) for r in range(table[i][j])):
            perm.append(nxt[g])
            nxt[g] += 1
    return tuple(perm)


def is_permutation(p: Sequence[int], c: int) -> bool:
    return len(p) == c and sorted(p) == list(range(c))


def interleave_groups(p: Sequence[int]) -> int | None:
    """The G for which ``p == interleave(len(p), G)``, else None (used by the builder's fast
    path)."""
    c = len(p)
    if c < 2 or p[0] != 0:
        return None
    k = p[1]  # interleave(c, g)[1] == c // g
    if k <= 0 or c % k:
        return None
    g = c // k
    if tuple(p) == interleave(c, g):
        return g
    return None


def _indices(v: Any) -> tuple[int, ...]:
    if not isinstance(v, (list, tuple)):
        raise InputError(f"permutation {show(v)}: expected a list of channel indices (ints)")
    if len(v) > MAX_CHANNELS:  # checked before anything is built from it
        raise InputError(f"permutation of {len(v):,} channels; accepted: at most {MAX_CHANNELS:,} "
                         "(MAX_CHANNELS)")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise InputError("permutation must be a list of channel indices (ints), "
                         f"got {show(list(v))}")
    return tuple(v)


def _scheme_int(scheme: dict, key: str) -> int:
    name = scheme["scheme"]
    if key not in scheme:
        raise InputError(f"permutation scheme {show(name)} needs key {key!r} (an integer)")
    v = scheme[key]
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    # as int() accepted before: an integral float or a numeric string
    if isinstance(v, float) and v.is_integer() and abs(v) <= 2**31:
        return int(v)
    if isinstance(v, str) and v.strip().isdigit() and len(v) <= 12:
        return int(v)
    raise InputError(f"permutation scheme {show(name)}: {key}={show(v)} must be an integer")


def resolve(scheme, c: int, prev_out_sizes: Sequence[int] | None = None,
            next_in_sizes: Sequence[int] | None = None) -> tuple[int, ...]:
    """Turn a scheme (explicit list, or ``{"scheme": NAME, ...}``) into an explicit permutation.

    Bounded: a list or channel count above MAX_CHANNELS is refused (ValueError) before any
    index list is built."""
    if isinstance(scheme, (list, tuple)):
        return _indices(scheme)
    if not isinstance(scheme, dict) or "scheme" not in scheme:
        raise InputError(f"permutation {show(scheme)}: expected an index list or "
                         "{'scheme': identity|interleave|stride|complement|custom, ...}")
    if not isinstance(c, int) or c > MAX_CHANNELS:
        raise InputError(f"permutation of {show(c)} channels; accepted: at most {MAX_CHANNELS:,} "
                         "(MAX_CHANNELS)")
    name = scheme["scheme"]
    if name == "identity":
        return identity(c)
    if name in ("interleave", "shuffle"):
        return interleave(c, _scheme_int(scheme, "groups"))
    if name == "stride":
        return stride(c, _scheme_int(scheme, "k"))
    if name == "custom":
        if "indices" not in scheme:
            raise InputError("permutation scheme 'custom' needs key 'indices' (a list of ints)")
        return _indices(scheme["indices"])
    if name == "complement":
        if prev_out_sizes is None or next_in_sizes is None:
            raise InputError("permutation scheme 'complement' needs a group conv on both sides")
        return complement(prev_out_sizes, next_in_sizes)
    raise InputError(f"unknown permutation scheme {show(name)}; accepted: identity, interleave, "
                     "shuffle, stride, complement, custom")
