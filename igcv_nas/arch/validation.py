"""Validation of specs: structure, shapes, permutations and the complementary condition.

``check(spec)`` returns a :class:`Report` (every violation, plus per-block complementary mode
and balance) and never raises or builds anything; ``validate(spec)`` raises
:class:`ValidationError` listing all violations.

Complementary condition, checked exactly. A block's convolutions form a chain
``y = P_L W_L ... P_1 W_1 x`` of 0/1 connectivity matrices (output channel o of W_l is
connected to input channel i when both lie in the same group). The number of paths from input
channel i to output channel o is entry (o, i) of the integer product. The block is

* ``exact``    when every (out, in) pair has exactly one path,
* ``relaxed``  when every pair has at least one (the product is dense),
* ``violated`` otherwise, reported with an example (out, in) pair that is not connected.

The product is computed at group granularity: all output channels of one group of W_l have
the same row, so ``R_l = A_l R_{l-1}`` with ``R_l`` of shape (groups of W_l, C_in) and ``A_l``
counting how many inputs of each group of W_l come (through the permutation) from each group
of W_{l-1}. ``R_l`` is accumulated sparsely (each input channel of W_l adds one row of
``R_{l-1}``), so a block costs O(sum_l C_l * n) for n reduced inputs, in column chunks of bounded
memory; a block whose cost would exceed ``MAX_CHECK_CELLS`` is reported, not computed. Path counts
saturate at 2**53 (exact below).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .cost import out_res
from ..errors import IGCVError
from .blocks import block_kind
from .spec import ACTS, ConvOp, NetworkSpec, runs_sum
from ..units import MAX_CHANNELS, MAX_CHECK_CELLS, MAX_KERNEL, MAX_STRIDE

MODES = ("exact", "relaxed", "violated")


@dataclass(frozen=True)
class Violation:
    where: str  # "spec", "stem", "s2.b1", "s2.b1.layer0"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class BlockCheck:
    label: str
    kind: str
    mode: str | None  # exact | relaxed | violated | None (structure invalid)
    example: tuple[int, int] | None = None  # an (out, in) pair with no path, when violated
    min_paths: int = 0
    max_paths: int = 0
    # max/min of (S*K_1, K_2, ..., K_L) for even igc chains; 1 = balanced
    balance: float | None = None


@dataclass
class Report:
    """The result of :func:`check`.

    Attributes:
        violations: every violation found (block, layer, value); empty when the spec is valid.
        blocks: per block its complementary mode, the min/max number of paths between an
            input and an output channel, and the IGCV2 balance ratio.
    """

    violations: list[Violation] = field(default_factory=list)
    blocks: list[BlockCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def mode(self) -> str:
        """Weakest complementary mode over all blocks."""
        worst = 0
        for b in self.blocks:
            worst = max(worst, MODES.index(b.mode) if b.mode else 2)
        return MODES[worst]


class ValidationError(IGCVError, ValueError):
    """Raised by :func:`validate` for a spec with violations; ``violations`` lists them all
    and the message names each (``s3.b0: complementary condition violated: ...``)."""

    def __init__(self, violations: list[Violation]):
        self.violations = violations
        head = f"{len(violations)} violation{'s' if len(violations) != 1 else ''}: "
        super().__init__(head + "; ".join(str(v) for v in violations))


def _group_index(runs, side: int) -> np.ndarray:
    """Group number of every channel on one side (1 = input, 2 = output)."""
    sizes = []
    for count, i, o in runs:
        sizes.extend([i if side == 1 else o] * count)
    return np.repeat(np.arange(len(sizes)), sizes)


_SATURATE = float(2**53)  # path counts are exact below this and saturate at it
_CHUNK_CELLS = 2**22       # cells of one column chunk (32 MB in float64)


class CheckTooLarge(IGCVError, ValueError):
    """The exact complementary check of a chain would visit more than MAX_CHECK_CELLS cells."""


def check_cells(ops) -> int:
    """Path-matrix cells the exact check of a (reduced) chain visits: sum_l C_in(l) * n_in."""
    return ops[0].in_chs * (1 + sum(op.in_chs for op in ops[1:]))


def _rows(ops, lo: int, hi: int) -> np.ndarray:
    """Paths from inputs ``lo..hi-1`` of the chain to each group of the last conv:
    (groups of the last conv, hi - lo) float64, saturating at 2**53."""
    first = ops[0]
    gin = _group_index(first.groups, 1)
    rows = np.zeros((runs_sum(first.groups)[0], hi - lo), dtype=np.float64)
    rows[gin[lo:hi], np.arange(hi - lo)] = 1
    gout = _group_index(first.groups, 2)
    p = first.perm
    for op in ops[1:]:
        src = gout if p is None else gout[np.asarray(p)]  # earlier group of each input position
        fed = rows[src]  # row of every input position of op; sum them per group, run by run
        parts, pos = [], 0
        for n, i, _ in op.groups:
            parts.append(fed[pos:pos + n * i].reshape(n, i, -1).sum(axis=1))
            pos += n * i
        rows = parts[0] if len(parts) == 1 else np.concatenate(parts)
        np.minimum(rows, _SATURATE, out=rows)
        gout = _group_index(op.groups, 2)
        p = op.perm
    return rows


def _out_groups(ops) -> np.ndarray:
    """Group of the last conv that feeds each final output channel (after its permutation)."""
    gout = _group_index(ops[-1].groups, 2)
    return gout if ops[-1].perm is None else gout[np.asarray(ops[-1].perm)]


def path_counts(ops: tuple[ConvOp, ...] | list[ConvOp]) -> np.ndarray:
    """Number of paths from each input channel to each output channel through a conv chain.

    Returns the (C_out, C_in) integer matrix of the final output (after the last permutation).
    Assumes the chain is structurally valid (group sums and permutation lengths). The whole
    matrix is materialised: for the bounded check use :func:`complementary`.
    """
    return _rows(ops, 0, ops[0].in_chs).astype(np.int64)[_out_groups(ops)]


def reduced_chain(ops) -> tuple[tuple[ConvOp, ...], list[int]]:
    """An equivalent, smaller chain with the same path counts per (output, input group), and the
    first input channel of each of its inputs.

    Two exact reductions: (1) a channel-wise conv without permutation (groups of 1 -> 1: the
    depthwise conv of IGCV3, the channel-wise first conv of IGCV2) connects each channel only
    to itself, so it is dropped; (2) all input channels of one group of the first remaining conv
    have the same paths to every output, so each group's inputs become one input. The check then
    multiplies (groups x groups) instead of (channels x channels) matrices."""
    kept = tuple(op for op in ops
                 if op.perm is not None or any(i != 1 or o != 1 for _, i, o in op.groups))
    if not kept:
        return tuple(ops), list(range(ops[0].in_chs))
    first = kept[0]
    starts, acc = [], 0
    for n, i, _ in first.groups:
        for _ in range(n):
            starts.append(acc)
            acc += i
    one = first._replace(in_chs=len(starts), groups=tuple((n, 1, o) for n, _, o in first.groups))
    return (one,) + kept[1:], starts


def complementary(ops) -> tuple[str, tuple[int, int] | None, int, int]:
    """(mode, example unconnected (out, in) pair or None, min paths, max paths) of a conv chain.

    The example is the first unconnected pair in (output, input) order. Memory is bounded
    (column chunks of the group-level matrix, never the (C_out, C_in) one); raises
    :class:`CheckTooLarge` (one line) when the chain would need more than MAX_CHECK_CELLS."""
    red, starts = reduced_chain(ops)
    if all(op.perm is None and all(i == 1 and o == 1 for _, i, o in op.groups) for op in red):
        c = red[0].in_chs  # nothing mixes channels: output o is joined to input o only
        return ("exact", None, 1, 1) if c == 1 else ("violated", (0, 1), 0, 1)
    cells = check_cells(red)
    if cells > MAX_CHECK_CELLS:
        raise CheckTooLarge(f"too large for the exact complementary check ({cells:,} path-matrix "
                            f"cells; accepted: at most {MAX_CHECK_CELLS:,})")
    n_in = red[0].in_chs
    widest = max(max(op.in_chs, op.out_chs) for op in red)
    step = max(1, _CHUNK_CELLS // widest)
    lo = hi = None
    first_zero = None  # per group of the last conv: first input with no path (-1: none)
    for c0 in range(0, n_in, step):
        rows = _rows(red, c0, min(n_in, c0 + step))
        r_lo, r_hi = rows.min(), rows.max()
        lo = r_lo if lo is None else min(lo, r_lo)
        hi = r_hi if hi is None else max(hi, r_hi)
        if first_zero is None:
            first_zero = np.full(rows.shape[0], -1, dtype=np.int64)
        if r_lo == 0:
            zero = rows == 0
            has = zero.any(axis=1) & (first_zero < 0)
            first_zero[has] = c0 + zero[has].argmax(axis=1)
    assert lo is not None and hi is not None and first_zero is not None  # >= 1 chunk ran
    lo, hi = int(lo), int(hi)
    if lo == 0:
        og = _out_groups(red)
        o = int(np.flatnonzero(first_zero[og] >= 0)[0])
        return "violated", (o, starts[int(first_zero[og[o]])]), lo, hi
    return ("exact" if hi == 1 else "relaxed"), None, lo, hi


def _check_op(op: ConvOp, where: str, res: int, out: list[Violation]) -> None:
    big = [f"{k}={v}" for k, v, hi in (("in_chs", op.in_chs, MAX_CHANNELS),
                                       ("out_chs", op.out_chs, MAX_CHANNELS),
                                       ("kernel", op.kernel, MAX_KERNEL),
                                       ("stride", op.stride, MAX_STRIDE)) if abs(v) > hi]
    if big:  # a spec built in code rather than read (from_dict refuses these)
        out.append(Violation(where, f"{', '.join(big)} out of range; accepted: channels up to "
                                    f"{MAX_CHANNELS:,}, kernel up to {MAX_KERNEL}, stride up to "
                                    f"{MAX_STRIDE}"))
        return
    if op.kernel < 1 or op.kernel % 2 == 0:
        out.append(Violation(where, f"kernel={op.kernel} must be odd and >= 1"))
    if op.stride < 1:
        out.append(Violation(where, f"stride={op.stride} must be >= 1"))
    elif res % op.stride:
        out.append(Violation(where, f"stride={op.stride} does not divide the input "
                                    f"resolution {res}"))
    if op.in_chs <= 0 or op.out_chs <= 0:
        out.append(Violation(where, f"channels {op.in_chs}->{op.out_chs} must be positive"))
    g, gi, go = runs_sum(op.groups)
    if gi != op.in_chs:
        out.append(Violation(where, f"input group sizes sum to {gi}, not in_chs={op.in_chs}"))
    if go != op.out_chs:
        out.append(Violation(where, f"output group sizes sum to {go}, not out_chs={op.out_chs}"))
    if op.perm is not None:
        p = op.perm
        if len(p) != op.out_chs:
            out.append(Violation(where, f"permutation has length {len(p)}, expected {op.out_chs}"))
        elif sorted(p) != list(range(op.out_chs)):
            seen, bad = set(), None
            for v in p:
                if not 0 <= v < op.out_chs or v in seen:
                    bad = v
                    break
                seen.add(v)
            out.append(Violation(where, f"not a permutation of 0..{op.out_chs - 1} "
                                        f"(index {bad} out of range or repeated)"))


def check(spec: NetworkSpec) -> Report:
    """Every violation in ``spec`` and the complementary mode of each block.

    Checked: channel chaining, group sizes, permutations, odd kernels, strides, where
    residuals and spatial convs may be, and the complementary condition, exactly (integer
    path counts of the block's connectivity product).

    Args:
        spec: the network.

    Returns:
        A :class:`Report` with every violation (empty when valid) and per block its mode
        (``exact``, ``relaxed`` or ``violated``), path counts and balance.

    A violation is in the report, never raised (:func:`validate` raises)."""
    rep = Report()
    v = rep.violations
    if spec.input_size <= 0:
        v.append(Violation("spec", f"input_size={spec.input_size} must be positive"))
    if spec.num_classes <= 0:
        v.append(Violation("spec", f"num_classes={spec.num_classes} must be positive"))
    if spec.in_chs <= 0:
        v.append(Violation("spec", f"in_chs={spec.in_chs} must be positive"))
    if spec.act not in ACTS:
        v.append(Violation("spec", f"act={spec.act!r}; accepted: {', '.join(ACTS)}"))
    if spec.head_chs < 0:
        v.append(Violation("spec", f"head_chs={spec.head_chs} must be >= 0 (0 = no head conv)"))
    if not spec.stages or not any(spec.stages):
        v.append(Violation("spec", "no blocks: stages must hold at least one block"))
    res = max(spec.input_size, 1)
    _check_op(spec.stem_op, "stem", res, v)
    res = out_res(res, max(spec.stem.stride, 1))
    c = spec.stem.out_chs
    for label, b in spec.blocks():
        n_before = len(v)
        if b.in_chs != c:
            v.append(Violation(label, f"in_chs={b.in_chs} but the previous layer gives "
                                      f"{c} channels"))
        ops = b.ops
        kind = block_kind(b.kind)  # what is particular to the kind (igc: chain structure)
        v.extend(Violation(where, msg) for where, msg in kind.check(b, label))
        r = res
        for li, op in enumerate(ops):
            _check_op(op, f"{label}.layer{li}", r, v)
            r = out_res(r, max(op.stride, 1))
        bc = BlockCheck(label, b.kind, None)
        if len(v) == n_before:
            try:
                bc.mode, bc.example, bc.min_paths, bc.max_paths = complementary(ops)
            except CheckTooLarge as e:
                v.append(Violation(label, str(e)))
                rep.blocks.append(bc)
                res, c = r, b.out_chs
                continue
            req = getattr(b, "require", "none")
            if bc.mode == "violated" and req != "none":
                assert bc.example is not None  # violated comes with its example
                o, i = bc.example
                v.append(Violation(label, f"complementary condition violated: output channel {o} "
                                          f"has no path to input channel {i} (require={req})"))
            elif bc.mode == "relaxed" and req == "exact":
                v.append(Violation(label, "complementary condition is relaxed, not exact: some "
                                          f"(out, in) pairs have {bc.max_paths} paths "
                                          "(require=exact)"))
            bc.balance = kind.balance(b)
        rep.blocks.append(bc)
        res, c = r, b.out_chs
    return rep


def validate(spec: NetworkSpec) -> Report:
    """Check ``spec`` like :func:`check`, and refuse it when it has any violation.

    Args:
        spec: the network.

    Returns:
        The :class:`Report` of a valid ``spec``.

    Raises:
        ValidationError: ``spec`` has violations; the error lists all of them."""
    rep = check(spec)
    if rep.violations:
        raise ValidationError(rep.violations)
    return rep
