"""Spec -> torch: the only place a :class:`~igcv_nas.arch.spec.NetworkSpec` becomes a module.

Conventions (they match :mod:`igcv_nas.arch.cost`, so what is counted is what is built):

* Network: stem conv (kernel k, stride s, padding k // 2, no bias) + BN + activation; the blocks
  in order; head 1x1 conv + BN + activation when ``spec.head_chs > 0``; global average pool;
  dropout(``spec.dropout``); ``Linear(features, num_classes)`` with bias.
* Activation: ``spec.act`` in ``relu`` (nn.ReLU), ``relu6`` (nn.ReLU6), ``hswish``
  (nn.Hardswish), ``silu`` (nn.SiLU), used wherever a :class:`~igcv_nas.arch.spec.ConvOp` has
  ``act=True`` and after the stem and head.
* Every ``ConvOp`` is conv (no bias, padding k // 2) + BatchNorm2d(out_chs) + activation (if
  ``op.act``) + channel permutation of the result (if ``op.perm`` is not None). One BN covers
  all groups of the op.
* Group convs: even groups (one run ``(count, in, out)``) are one ``nn.Conv2d(groups=count)``.
  Uneven groups: one ``nn.Conv2d(groups=count)`` per run, applied to that run's slice of the
  input channels, outputs concatenated in run order (so equal-size groups share one conv).
* Permutations use the gather convention ``y[:, i] = x[:, p[i]]``. When ``p`` is ShuffleNet's
  ``interleave(C, G)`` (:func:`igcv_nas.arch.perm.interleave_groups`) a channel shuffle is used
  (:class:`ChannelShuffle`: PyTorch's native ``channel_shuffle``; view/transpose/reshape under
  ONNX export); otherwise an index gather with registered non-persistent index buffers
  (:class:`ChannelGather`: ``torch.index_select`` on dim 1 for NCHW, indexing of the last axis
  of the NHWC view for channels_last; its backward gathers with the inverse permutation). Both
  give exactly the same
  values and return a tensor in the input's memory format: a ``channels_last`` input gives a
  ``channels_last`` output, anything else a contiguous NCHW tensor. With a channels_last input
  (and/or ``model.to(memory_format=torch.channels_last)``) activations therefore stay
  channels_last through the whole network on CPU; the logits are a plain (N, classes) tensor.
* A block whose spec has ``residual`` True returns ``x + body(x)``.
* Parameters: conv weights, BN weight and bias, classifier weight and bias -- nothing else
  (index buffers are not parameters and not saved in the state dict).

Modules read no files and no global configuration: everything comes from the spec.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError
from ..arch.perm import interleave_groups
from ..arch.spec import ACTS, Block as BlockSpec, ConvOp, NetworkSpec, Runs

__all__ = ["Block", "ChannelGather", "ChannelShuffle", "ConvBN", "GroupConv", "IGCNet",
           "build_block", "build_head", "build_model", "build_stem", "make_act", "make_perm"]

_ACT_MODULES: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish, "silu": nn.SiLU}
assert set(_ACT_MODULES) == set(ACTS)


def make_act(name: str) -> nn.Module:
    """Activation module for ``spec.act`` (in-place: it always follows a fresh BN output)."""
    try:
        return _ACT_MODULES[name](inplace=True)
    except KeyError:
        raise InputError(f"unknown activation {name!r}; accepted: {', '.join(ACTS)}") from None


def _is_channels_last(x: torch.Tensor) -> bool:
    """True when ``x`` is laid out NHWC (and not also plain contiguous, e.g. H = W = 1)."""
    return (x.dim() == 4 and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last))


# ---------------------------------------------------------------------------------------------
# permutations

class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle with ``groups`` G: ``y[:, i] = x[:, interleave(C, G)[i]]``.

    ``torch.nn.functional.channel_shuffle``, PyTorch's native kernel: it keeps a channels_last
    input channels_last and, in training on the CPU, runs forward + backward about twice as fast
    as a view-transpose-copy (whose copy moves the two innermost NHWC axes one element at a
    time). Under ONNX export, which has no channel_shuffle operator, the same shuffle is
    written as view (G, C/G), transpose, flatten.
    """

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.onnx.is_in_onnx_export():
            return F.channel_shuffle(x, self.groups)
        n, c, h, w = x.shape
        g = self.groups
        return x.reshape(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class _Permute(torch.autograd.Function):
    """``x[:, perm]`` whose backward is the inverse permutation (a gather, not the scatter-add
    that autograd derives for indexing)."""

    @staticmethod
    def forward(ctx, x, index, inverse):  # type: ignore[override]
        ctx.save_for_backward(inverse)
        return _gather_channels(x, index)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (inverse,) = ctx.saved_tensors
        return _gather_channels(grad, inverse), None, None


def _gather_channels(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    if _is_channels_last(x):
        # gather along the innermost (channel) axis of the NHWC view; indexing is about twice
        # as fast as index_select there on CPU, and the result stays channels_last
        return x.permute(0, 2, 3, 1)[..., index].permute(0, 3, 1, 2)
    return torch.index_select(x, 1, index)


class ChannelGather(nn.Module):
    """Arbitrary channel permutation ``y[:, i] = x[:, perm[i]]`` (``torch.index_select`` on dim 1).

    The indices and their inverse are non-persistent buffers: they move with ``.to(device)`` but
    are neither parameters nor part of the state dict. Keeps channels_last inputs channels_last.
    In training the backward pass gathers with the inverse permutation (:class:`_Permute`).
    """

    index: torch.Tensor
    inverse: torch.Tensor

    def __init__(self, perm: Sequence[int]):
        super().__init__()
        index = torch.as_tensor(list(perm), dtype=torch.long)
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("inverse", torch.argsort(index), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad and not torch.jit.is_tracing():
            return _Permute.apply(x, self.index, self.inverse)
        return _gather_channels(x, self.index)

    def extra_repr(self) -> str:
        return f"channels={self.index.numel()}"


def make_perm(perm: Sequence[int]) -> nn.Module:
    """:class:`ChannelShuffle` when ``perm`` is an interleave, else :class:`ChannelGather`."""
    g = interleave_groups(perm)
    return ChannelShuffle(g) if g is not None else ChannelGather(perm)


# ---------------------------------------------------------------------------------------------
# convolutions

class GroupConv(nn.Module):
    """Group convolution with even or uneven groups (run-length ``((count, in, out), ...)``).

    One ``nn.Conv2d(groups=count)`` per run; with several runs the input is split by run and
    the outputs are concatenated in run order. No bias; padding ``kernel // 2``.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int, groups: Runs):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(count * gi, count * go, kernel, stride, kernel // 2, groups=count, bias=False)
            for count, gi, go in groups)
        self.splits = [count * gi for count, gi, _ in groups]
        if sum(self.splits) != in_chs or sum(c * go for c, _, go in groups) != out_chs:
            raise InputError(f"group runs {groups} do not give {in_chs} -> {out_chs} channels")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.convs) == 1:
            return self.convs[0](x)
        parts = torch.split(x, self.splits, dim=1)
        return torch.cat([conv(p) for conv, p in zip(self.convs, parts)], dim=1)


class ConvBN(nn.Module):
    """One :class:`~igcv_nas.arch.spec.ConvOp`: conv + BN + (activation) + (permutation)."""

    def __init__(self, op: ConvOp, act: str):
        super().__init__()
        self.conv = GroupConv(op.in_chs, op.out_chs, op.kernel, op.stride, op.groups)
        self.bn = nn.BatchNorm2d(op.out_chs)
        self.act: nn.Module | None = make_act(act) if op.act else None
        if op.perm is not None and sorted(op.perm) != list(range(op.out_chs)):
            raise InputError(f"perm of length {len(op.perm)} is not a permutation of "
                             f"{op.out_chs} channels")
        self.perm: nn.Module | None = make_perm(op.perm) if op.perm is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        if self.act is not None:
            x = self.act(x)
        if self.perm is not None:
            x = self.perm(x)
        return x


# ---------------------------------------------------------------------------------------------
# blocks and network

class Block(nn.Module):
    """A spec block: its ``ops`` in order, plus the input when the block is residual."""

    def __init__(self, block: BlockSpec, act: str):
        super().__init__()
        self.kind = block.kind
        self.residual = bool(block.residual)
        self.ops = nn.Sequential(*(ConvBN(op, act) for op in block.ops))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ops(x)
        return x + y if self.residual else y

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, residual={self.residual}"


class IGCNet(nn.Module):
    """stem -> blocks -> (head) -> global average pool -> dropout -> classifier."""

    def __init__(self, spec: NetworkSpec):
        super().__init__()
        self.stem = build_stem(spec)
        last = spec.stem.out_chs
        for label, b in spec.blocks():
            if b.in_chs != last:
                raise InputError(f"{label}: in_chs={b.in_chs} but the previous layer gives {last}")
            last = b.out_chs
        self.blocks = nn.Sequential(*(Block(b, spec.act) for _, b in spec.blocks()))
        self.head, self.pool, self.dropout, self.classifier = _head_modules(spec)
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's MobileNetV2 initialisation."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        if self.head is not None:
            x = self.head(x)
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.forward_features(x)))


def build_stem(spec: NetworkSpec) -> ConvBN:
    """The stem of ``spec`` as a module (:attr:`~igcv_nas.arch.spec.NetworkSpec.stem_op`)."""
    return ConvBN(spec.stem_op, spec.act)


def _head_modules(spec: NetworkSpec) -> tuple[ConvBN | None, nn.Module, nn.Module, nn.Linear]:
    """(head conv or None, global pool, dropout, classifier) of ``spec``."""
    op = spec.head_op
    return (ConvBN(op, spec.act) if op is not None else None, nn.AdaptiveAvgPool2d(1),
            nn.Dropout(spec.dropout), nn.Linear(spec.feature_chs, spec.num_classes))


def build_head(spec: NetworkSpec) -> nn.Sequential:
    """Everything after the last block of ``spec`` as one module: head conv (when there is
    one), global average pool, flatten, dropout, classifier -- the same modules
    :class:`IGCNet` runs, in the same order (the latency LUT times this piece)."""
    head, pool, dropout, classifier = _head_modules(spec)
    return nn.Sequential(*([head] if head is not None else []), pool, nn.Flatten(1), dropout,
                         classifier)


def build_block(block: BlockSpec, act: str = "relu6") -> Block:
    """A single block as a module (for benchmarks and tests); ``act`` names the activation."""
    return Block(block, act)


def build_model(spec: NetworkSpec) -> IGCNet:
    """The torch module for ``spec`` (see the module docstring for the conventions).

    Args:
        spec: the network; its parameter count equals ``cost.count(spec).params``.

    Returns:
        The :class:`IGCNet` (an ``nn.Module``), in training mode, with fresh initial weights.

    Raises:
        InputError: the builder's refusals (a spec it cannot build)."""
    return IGCNet(spec)
