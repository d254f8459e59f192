"""Exact cost of a spec, as pure functions (no torch).

Conventions (what the numbers mean):

* **MACs** -- multiply-accumulates of convolutions and the classifier (linear) layer only, at
  batch 1. A conv with kernel k x k, groups of (in_g -> out_g) channels and output H x W costs
  ``k*k * sum_g(in_g * out_g) * H * W``; the classifier costs ``features * classes``. BN,
  activations, pooling, residual adds and permutations cost 0 MACs. This is the mobile
  literature's "FLOPs" (MobileNetV2 1.0 at 224 = 300,774,272) and equals fvcore's
  FlopCountAnalysis restricted to conv + linear.
* **FLOPs** -- ``2 * MACs`` (one multiply and one add), as torch.utils.flop_counter reports.
* **params** -- conv weights (no conv bias), BN weight and bias (2 per channel; running stats
  are buffers, not parameters) and the classifier's weight and bias: what
  ``sum(p.numel() for p in model.parameters())`` gives for the built model.
* **peak_act** -- largest number of activation elements alive at once during an inference
  forward pass at batch 1 (a layer's input and output, plus a residual block's input while
  the block runs, plus the copy a permutation makes). Bytes in fp32: ``4 * peak_act``.
* **perm_bytes** -- bytes moved by channel permutations in fp32 at batch 1: every
  (non-identity) permutation reads and writes its whole tensor, ``2 * 4 * C * H * W``.

Output size of a conv with odd kernel k, padding k // 2 and stride s: ``(H - 1) // s + 1``
(:func:`out_res`).

The stem and the head conv are conv ops like a block's (:attr:`NetworkSpec.stem_op
<igcv_nas.arch.spec.NetworkSpec.stem_op>`, :func:`igcv_nas.arch.spec.head_conv`) and are costed by
the same :func:`ops_cost`; the classifier by :func:`classifier_cost`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .spec import Block, ConvOp, NetworkSpec, head_conv


@dataclass(frozen=True)
class BlockCost:
    label: str
    kind: str
    in_res: int
    out_res: int
    macs: int
    params: int
    perm_bytes: int

    @property
    def flops(self) -> int:
        return 2 * self.macs


@dataclass(frozen=True)
class Cost:
    """What a network costs, as :func:`count` returns it.

    Attributes:
        macs: multiply-accumulates of conv + linear layers at batch 1 (what a ``--flops``
            budget bounds; MobileNetV2 1.0 = 300,774,272).
        params: parameters of the built model (conv weights, BN weight and bias, classifier
            weight and bias).
        peak_act: most activation elements alive at once in an inference pass at batch 1
            (``4 * peak_act`` bytes in fp32).
        perm_bytes: bytes moved by the permutations in fp32 at batch 1.
        blocks: with ``count(spec, per_block=True)``: one :class:`BlockCost` per block.
        stem: with ``per_block=True``: the stem conv's cost.
        head: with ``per_block=True``: the head conv's cost (None without a head conv).
        classifier: with ``per_block=True``: the global average pool and linear classifier.
    """

    macs: int
    params: int
    peak_act: int
    perm_bytes: int
    blocks: tuple[BlockCost, ...] = field(default=(), compare=False)
    # with count(per_block=True): the pieces around the blocks
    stem: BlockCost | None = field(default=None, compare=False)
    head: BlockCost | None = field(default=None, compare=False)  # None also without a head conv
    classifier: BlockCost | None = field(default=None, compare=False)

    @property
    def flops(self) -> int:
        """2 x MACs."""
        return 2 * self.macs

    def as_dict(self) -> dict:
        return {"macs": self.macs, "flops": self.flops, "params": self.params,
                "peak_act": self.peak_act, "peak_act_bytes": 4 * self.peak_act,
                "perm_bytes": self.perm_bytes}


def out_res(res: int, stride: int) -> int:
    """Output side of a conv with odd kernel k, padding k // 2 and stride ``stride`` on a
    ``res`` x ``res`` input: ``ceil(res / stride)`` (what the built conv gives)."""
    return (res - 1) // stride + 1


def ops_cost(ops: Sequence[ConvOp], res: int,
             residual: bool = False) -> tuple[int, int, int, int, int]:
    """(MACs, params, permutation bytes, peak activation elements, output resolution) of a
    chain of conv ops -- a block's ``ops``, or the one op of the stem or of the head -- at input
    resolution ``res``; ``residual``: the chain's input is held until its end (a residual
    block). The one op-cost function: cost, the space's bounds and the latency model's features
    all count convolutions with it (conventions in the module doc)."""
    held = ops[0].in_chs * res * res if residual else 0
    macs = params = perm_bytes = peak = 0
    live_in = ops[0].in_chs * res * res  # the first op's input is the held tensor itself
    for _cin, cout, k, stride, groups, _, perm in ops:  # hot path: plain locals only
        if len(groups) == 1:
            n, gi, go = groups[0]
            w = k * k * n * gi * go
        else:
            w = k * k * sum(n * gi * go for n, gi, go in groups)
        res = (res - 1) // stride + 1  # out_res, inlined: specs are costed by the thousand
        out_elems = cout * res * res
        macs += w * res * res
        params += w + 2 * cout
        if live_in + out_elems > peak:
            peak = live_in + out_elems
        if perm is not None:
            perm_bytes += 8 * out_elems
            if 2 * out_elems + held > peak:
                peak = 2 * out_elems + held
        live_in = out_elems + held
    return macs, params, perm_bytes, peak, res


def classifier_cost(features: int, classes: int) -> tuple[int, int]:
    """(MACs, params) of the classifier: ``Linear(features, classes)`` with bias (the global
    average pool before it costs 0 MACs and has no parameters)."""
    return features * classes, features * classes + classes


def block_cost(b: Block, res: int) -> tuple[int, int, int, int, int]:
    """(MACs, params, permutation bytes, peak activation elements, output resolution) of one
    block at input resolution ``res`` (conventions in the module doc)."""
    return ops_cost(b.ops, res, b.residual)


def block_macs(b: Block, res: int) -> tuple[int, int]:
    """(MACs, output resolution) of one block at input resolution ``res``."""
    m, _, _, _, out = block_cost(b, res)
    return m, out


def count(spec: NetworkSpec, per_block: bool = False) -> Cost:
    """MACs, params, peak activation and permutation traffic of ``spec`` (see module doc).

    Pure Python, no torch; equal to fvcore's conv + linear count of the built model.

    Args:
        spec: the network.
        per_block: also the cost of every block (``blocks``) and of the stem, head and
            classifier (``stem``, ``head``, ``classifier``); with the blocks they add up to
            the totals.

    Returns:
        The :class:`Cost` of ``spec`` at its own input size and classes. Nothing is raised
        for a spec that :func:`igcv_nas.arch.spec.from_dict` read (it refuses what cannot
        be counted); :func:`igcv_nas.arch.validation.check` says whether it is valid."""
    res = spec.input_size
    macs, params, perm_bytes, peak, out = ops_cost((spec.stem_op,), res)
    stem = BlockCost("stem", "stem", res, out, macs, params, perm_bytes) if per_block else None
    res, last = out, spec.stem.out_chs
    blocks = []
    for si, stage in enumerate(spec.stages):
        for bi, b in enumerate(stage):
            b_macs, b_params, b_perm, b_peak, b_res = ops_cost(b.ops, res, b.residual)
            macs += b_macs
            params += b_params
            perm_bytes += b_perm
            if b_peak > peak:
                peak = b_peak
            if per_block:
                blocks.append(BlockCost(f"s{si}.b{bi}", b.kind, res, b_res, b_macs, b_params,
                                        b_perm))
            res, last = b_res, b.out_chs
    head_op, head = head_conv(last, spec.head_chs), None
    if head_op is not None:
        h_macs, h_params, _, h_peak, _ = ops_cost((head_op,), res)
        macs += h_macs
        params += h_params
        if h_peak > peak:
            peak = h_peak
        last = head_op.out_chs
        if per_block:
            head = BlockCost("head", "head", res, res, h_macs, h_params, 0)
    c_macs, c_params = classifier_cost(last, spec.num_classes)
    macs += c_macs
    params += c_params
    classifier = (BlockCost("classifier", "linear", res, 1, c_macs, c_params, 0) if per_block
                  else None)
    return Cost(macs, params, peak, perm_bytes, tuple(blocks), stem, head, classifier)


def macs(spec: NetworkSpec) -> int:
    """Conv + linear multiply-accumulates at batch 1 (see module doc)."""
    return count(spec).macs


def params(spec: NetworkSpec) -> int:
    """Learnable parameters of the built model (conv, BN affine, classifier)."""
    return count(spec).params


def human(n: float, unit: str = "") -> str:
    """``300774272 -> '300.77M'``."""
    for div, suf in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suf}{unit}"
    return f"{n:g}{unit}"
