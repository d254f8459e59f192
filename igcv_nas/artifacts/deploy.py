"""Deployment form of a built model: the same function with fewer, cheaper kernels.

* **BN folding**: every conv + batch norm becomes one conv with bias (``FoldedConv``).
* **Dense collapse**: a chain of 1x1 stride-1 group convolutions and permutations with no
  activation between them (IGCV1/2 and uneven-group IGC blocks: ``L - 1`` such convs after the
  channel-wise conv) is a product of linear maps, and by the complementary condition that
  product is dense: it is replaced by one dense 1x1 convolution with bias (``DenseConv``),
  followed by the chain's last activation. Whether that is faster depends on the device: with
  ``collapse="auto"`` each chain is timed both ways on the CPU at its input shape and the faster
  form is kept (``benchmarks/bench_export.py`` prints the per-block-type table).

``deploy(model)`` works on a copy in eval mode; the result's outputs equal the original's
(fp32, up to rounding: tested <= 1e-4).
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from ..errors import InputError
from ..nn.build import Block, ChannelGather, ChannelShuffle, ConvBN, IGCNet

COLLAPSE = ("auto", "all", "none")


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _perm_index(perm: nn.Module | None, c: int) -> torch.Tensor:
    """The gather index ``y[i] = x[p[i]]`` of a permutation module."""
    if perm is None:
        return torch.arange(c)
    if isinstance(perm, ChannelGather):
        return perm.index.cpu()
    if isinstance(perm, ChannelShuffle):
        g = perm.groups
        return torch.arange(c).view(g, c // g).t().reshape(-1)
    raise TypeError(f"unknown permutation module {type(perm).__name__}")


class FoldedConv(nn.Module):
    """A :class:`~igcv_nas.nn.build.ConvBN` with its batch norm folded into the convolution(s)."""

    def __init__(self, cb: ConvBN):
        super().__init__()
        scale, shift = _bn_scale_shift(cb.bn)
        self.convs = nn.ModuleList()
        start = 0
        for conv in cb.conv.convs:
            c = conv.out_channels
            new = nn.Conv2d(conv.in_channels, c, conv.kernel_size, conv.stride, conv.padding,
                            groups=conv.groups, bias=True)
            with torch.no_grad():
                new.weight.copy_(conv.weight * scale[start:start + c].view(-1, 1, 1, 1))
                new.bias.copy_(shift[start:start + c])
            self.convs.append(new)
            start += c
        self.splits = list(cb.conv.splits)
        self.act, self.perm = cb.act, cb.perm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.convs) == 1:
            x = self.convs[0](x)
        else:
            parts = torch.split(x, self.splits, dim=1)
            x = torch.cat([c(p) for c, p in zip(self.convs, parts)], dim=1)
        if self.act is not None:
            x = self.act(x)
        if self.perm is not None:
            x = self.perm(x)
        return x


def affine(cb: ConvBN) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, c)`` with ``perm(BN(conv(x))) = A x + c`` for a 1x1, stride-1 op (no activation
    counted): ``A`` is the dense (out, in) matrix -- block-diagonal over the groups, rows scaled
    by BN, rows permuted."""
    out_chs = sum(c.out_channels for c in cb.conv.convs)
    in_chs = sum(cb.conv.splits)
    a = torch.zeros(out_chs, in_chs, dtype=torch.float64)
    r0 = c0 = 0
    for conv in cb.conv.convs:
        g = conv.groups
        gi, go = conv.in_channels // g, conv.out_channels // g
        w = conv.weight.detach().double().view(conv.out_channels, gi)
        for k in range(g):
            a[r0 + k * go:r0 + (k + 1) * go, c0 + k * gi:c0 + (k + 1) * gi] = w[k * go:(k + 1) * go]
        r0 += conv.out_channels
        c0 += conv.in_channels
    scale, shift = _bn_scale_shift(cb.bn)
    a = a * scale.detach().double().view(-1, 1)
    b = shift.detach().double()
    p = _perm_index(cb.perm, out_chs)
    return a[p], b[p]


class DenseConv(nn.Module):
    """A collapsed chain: one dense 1x1 convolution with bias, then the chain's activation."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, act: nn.Module | None):
        super().__init__()
        self.conv = nn.Conv2d(a.shape[1], a.shape[0], 1, bias=True)
        with torch.no_grad():
            self.conv.weight.copy_(a.float().view(a.shape[0], a.shape[1], 1, 1))
            self.conv.bias.copy_(b.float())
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.act(x) if self.act is not None else x


def _collapsible(cb: ConvBN) -> bool:
    return all(c.kernel_size == (1, 1) and c.stride == (1, 1) for c in cb.conv.convs)


def chains(block: Block) -> list[tuple[int, int]]:
    """``(start, end)`` (end exclusive) of every maximal run of >= 2 collapsible ops of a block:
    1x1, stride 1, no activation except on the run's last op."""
    ops, out, i = list(block.ops), [], 0
    while i < len(ops):
        j = i
        while j < len(ops) and _collapsible(ops[j]) and (j == i or ops[j - 1].act is None):
            j += 1
        if j - i >= 2:
            out.append((i, j))
            i = j
        else:
            i += 1
    return out


def collapse(ops: list[ConvBN]) -> DenseConv:
    a, b = affine(ops[0])
    for cb in ops[1:]:
        a2, b2 = affine(cb)
        a, b = a2 @ a, a2 @ b + b2
    # the last op's activation is elementwise, so its permutation (inside ``a``) commutes with it
    return DenseConv(a, b, ops[-1].act)


def faster(sparse: nn.Module, dense: nn.Module, shape: tuple[int, ...], reps: int = 15) -> bool:
    """True when ``dense`` runs faster than ``sparse`` on the CPU for an input of ``shape``."""
    from ..evaluate.latency import measure_module
    ts = measure_module(sparse, shape[1:], "cpu", None, shape[0], False, 3, reps).median_ms
    td = measure_module(dense, shape[1:], "cpu", None, shape[0], False, 3, reps).median_ms
    return td < ts


def deploy_block(blk: Block, collapse_mode: str = "auto", in_shape: tuple | None = None,
                 decide: Callable[[nn.Module, nn.Module, tuple], bool] | None = None) -> Block:
    """``blk`` (changed in place; pass a copy in eval mode) with BN folded and its chains
    collapsed per ``collapse_mode`` (``auto`` needs the block's input shape ``in_shape``)."""
    ops = list(blk.ops)
    runs = chains(blk) if collapse_mode != "none" else []
    new: list[nn.Module] = []
    k = 0
    for s, e in runs:
        new += [FoldedConv(cb) for cb in ops[k:s]]
        dense = collapse(ops[s:e])
        keep = True
        if collapse_mode == "auto":
            with torch.no_grad():  # the chain's input shape: run the block's ops before it
                x = torch.zeros(in_shape)
                for cb in ops[:s]:
                    x = cb(x)
            sparse = nn.Sequential(*(FoldedConv(cb) for cb in ops[s:e]))
            keep = (decide or faster)(sparse, dense, tuple(x.shape))
        new += [dense] if keep else [FoldedConv(cb) for cb in ops[s:e]]
        k = e
    new += [FoldedConv(cb) for cb in ops[k:]]
    blk.ops = nn.Sequential(*new)
    return blk


def deploy(model: IGCNet, collapse_mode: str = "auto", input_size: int | None = None,
           decide: Callable[[nn.Module, nn.Module, tuple], bool] | None = None) -> nn.Module:
    """The deployment form of ``model`` (module doc): BN folded everywhere; chains collapsed
    per ``collapse_mode`` (``auto``: where timing at batch 1 says faster; needs ``input_size``).

    Args:
        model: the built network; it is not changed (a deep copy in eval mode is transformed).
        collapse_mode: ``auto`` (collapse a chain where timing on the CPU says the dense form is
            faster), ``all`` (collapse every chain) or ``none`` (fold BN only).
        input_size: the input resolution (square), needed by ``auto`` to find each block's
            input shape.
        decide: ``decide(sparse, dense, shape)`` -> keep the dense form, in place of the CPU
            timing (:func:`faster`) under ``auto``.

    Returns:
        The deployment copy of ``model`` in eval mode: stem, head and every block with BN folded
        and its chains collapsed as chosen; same outputs up to rounding.

    Raises:
        InputError: ``collapse_mode`` is not one of ``auto``, ``all``, ``none``, or it is
            ``auto`` without ``input_size``."""
    if collapse_mode not in COLLAPSE:
        raise InputError(f"collapse={collapse_mode!r}; accepted: {', '.join(COLLAPSE)}")
    if collapse_mode == "auto" and input_size is None:
        raise InputError("collapse='auto' times each chain: give input_size")
    m = copy.deepcopy(model).eval()
    shapes: dict[int, tuple] = {}
    if collapse_mode == "auto":  # the input shape of every block
        hooks = [blk.register_forward_pre_hook(
            lambda mod, inp, i=i: shapes.__setitem__(i, tuple(inp[0].shape)))
            for i, blk in enumerate(m.blocks)]
        with torch.no_grad():
            m(torch.zeros(1, m.stem.conv.convs[0].in_channels, input_size, input_size))
        for h in hooks:
            h.remove()
    m.stem = FoldedConv(m.stem)
    if m.head is not None:
        m.head = FoldedConv(m.head)
    for i, blk in enumerate(m.blocks):
        deploy_block(blk, collapse_mode, shapes.get(i), decide)
    return m
