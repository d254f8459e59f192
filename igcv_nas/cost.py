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

Output size of a conv with odd kernel k, padding k // 2 and stride s: ``(H - 1) // s + 1``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .spec import Block, NetworkSpec


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
    macs: int
    params: int
    peak_act: int
    perm_bytes: int
    blocks: tuple[BlockCost, ...] = field(default=(), compare=False)

    @property
    def flops(self) -> int:
        """2 x MACs."""
        return 2 * self.macs

    def as_dict(self) -> dict:
        return {"macs": self.macs, "flops": self.flops, "params": self.params,
                "peak_act": self.peak_act, "peak_act_bytes": 4 * self.peak_act,
                "perm_bytes": self.perm_bytes}


def block_cost(b: Block, res: int) -> tuple[int, int, int, int, int]:
    """(MACs, params, permutation bytes, peak activation elements, output resolution) of one
    block at input resolution ``res`` (conventions in the module doc)."""
    held = b.in_chs * res * res if b.residual else 0
    macs = params = perm_bytes = peak = 0
    live_in = b.in_chs * res * res  # the first op's input is the held tensor itself
    for _cin, cout, k, stride, groups, _, perm in b.ops:  # hot path: plain locals only
        if len(groups) == 1:
            n, gi, go = groups[0]
            w = k * k * n * gi * go
        else:
            w = k * k * sum(n * gi * go for n, gi, go in groups)
        res = (res - 1) // stride + 1
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


def block_macs(b: Block, res: int) -> tuple[int, int]:
    """(MACs, output resolution) of one block at input resolution ``res``."""
    m, _, _, _, out = block_cost(b, res)
    return m, out


def count(spec: NetworkSpec, per_block: bool = False) -> Cost:
    """MACs, params, peak activation and permutation traffic of ``spec`` (see module doc)."""
    res = spec.input_size
    s = spec.stem
    res_out = (res - 1) // s.stride + 1
    w = s.kernel * s.kernel * spec.in_chs * s.out_chs
    macs = w * res_out * res_out
    params = w + 2 * s.out_chs
    peak = spec.in_chs * res * res + s.out_chs * res_out * res_out
    perm_bytes = 0
    res = res_out
    last = s.out_chs
    blocks = []
    for si, stage in enumerate(spec.stages):
        for bi, b in enumerate(stage):
            b_macs, b_params, b_perm, b_peak, out_res = block_cost(b, res)
            macs += b_macs
            params += b_params
            perm_bytes += b_perm
            if b_peak > peak:
                peak = b_peak
            if per_block:
                blocks.append(BlockCost(f"s{si}.b{bi}", b.kind, res, out_res, b_macs, b_params,
                                        b_perm))
            res, last = out_res, b.out_chs
    area = res * res
    if spec.head_chs:
        w = last * spec.head_chs
        macs += w * area
        params += w + 2 * spec.head_chs
        live = (last + spec.head_chs) * area
        if live > peak:
            peak = live
        last = spec.head_chs
    macs += last * spec.num_classes
    params += last * spec.num_classes + spec.num_classes
    return Cost(macs, params, peak, perm_bytes, tuple(blocks))


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
