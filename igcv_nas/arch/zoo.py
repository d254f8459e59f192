"""Reference networks as specs (not hand-written modules).

Each entry is a function ``(width=1.0, cifar=False, num_classes=None) -> NetworkSpec``:

* ``mobilenet_v2``  -- MobileNetV2 (torchvision's layout; 1.0 at 224: 3,504,872 params,
                       300,774,272 MACs).
* ``mobilenet_v1``  -- MobileNetV1 (depthwise-separable blocks, no head conv).
* ``igcv3_d``       -- IGCV3-D: MobileNetV2's table with depths (1,4,6,8,6,6,1) and IGCV3 blocks,
                       G1 = G2 = 2 (group expansion and projection), interleave permutations.
* ``igcv2``         -- IGCV2 on MobileNetV1's layout: every depthwise-separable block becomes a
                       chain of a channel-wise 3x3 (K_1 = 1) and 1x1 group convs with K = 8
                       channels per group, L = ceil(log_8 C) + 1 layers, interleave
                       permutations between them.

The blocks come from each kind's dict builder in :mod:`igcv_nas.arch.blocks` (``mbconv_block``,
``dwsep_block``, ``igcv3_block``, ``igc_chain``; re-exported here). ImageNet form: 224x224,
1000 classes. CIFAR form (``cifar=True``): 32x32, 10 classes, stem stride 1
and no downsampling in the second stage.
"""
from __future__ import annotations

from typing import Callable

from .blocks import dwsep_block, igc_chain, igcv3_block, mbconv_block
from .blocks import igc_groups  # noqa: F401  (re-exported: zoo.igc_groups as before)
from ..errors import InputError
from .spec import NetworkSpec, SpecError, from_dict
from ..units import MAX_ZOO_WIDTH, show

# t, c, n, s  (expansion, channels, repeats, first stride) -- MobileNetV2, Sandler et al. 2018
MBV2_TABLE = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
              (6, 160, 3, 2), (6, 320, 1, 1))
IGCV3_D_DEPTHS = (1, 4, 6, 8, 6, 6, 1)
# c, s  -- MobileNetV1, Howard et al. 2017 (after the 32-channel stem)
MBV1_TABLE = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
              (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor``, never more than 10% down (torchvision's
    rule)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new < 0.9 * v:
        new += divisor
    return new


def _target(cifar: bool, num_classes: int | None) -> tuple[int, int]:
    return (32, num_classes or 10) if cifar else (224, num_classes or 1000)


def _stage_strides(table_strides: list[int], cifar: bool) -> list[int]:
    """CIFAR form: the second stage (index 1) does not downsample."""
    s = list(table_strides)
    if cifar:
        s[1] = 1
    return s


def _net(name: str, cifar: bool, num_classes: int | None, stem: int, stages: list, head: int,
         act: str = "relu6", dropout: float = 0.2) -> NetworkSpec:
    size, classes = _target(cifar, num_classes)
    return from_dict({"name": name, "input_size": size, "num_classes": classes, "act": act,
                      "stem": {"out_chs": stem, "kernel": 3, "stride": 1 if cifar else 2},
                      "stages": stages, "head_chs": head, "dropout": dropout})


def mobilenet_v2(width: float = 1.0, cifar: bool = False,
                 num_classes: int | None = None) -> NetworkSpec:
    width = check_width(width, 'mobilenet_v2')
    c_in = make_divisible(32 * width)
    head = make_divisible(1280 * max(1.0, width))
    strides = _stage_strides([s for *_, s in MBV2_TABLE], cifar)
    stages = []
    for (t, c, n, _), s in zip(MBV2_TABLE, strides):
        c_out = make_divisible(c * width)
        blocks = []
        for i in range(n):
            blocks.append(mbconv_block(c_in, c_out, s if i == 0 else 1, t))
            c_in = c_out
        stages.append(blocks)
    return _net(f"mobilenet_v2_{width:g}{'_cifar' if cifar else ''}", cifar, num_classes,
                make_divisible(32 * width), stages, head)


def igcv3_d(width: float = 1.0, cifar: bool = False, num_classes: int | None = None) -> NetworkSpec:
    width = check_width(width, 'igcv3_d')
    c_in = make_divisible(32 * width)
    head = make_divisible(1280 * max(1.0, width))
    strides = _stage_strides([s for *_, s in MBV2_TABLE], cifar)
    stages = []
    for (t, c, _, _), n, s in zip(MBV2_TABLE, IGCV3_D_DEPTHS, strides):
        c_out = make_divisible(c * width)
        blocks = []
        for i in range(n):
            blocks.append(igcv3_block(c_in, c_out, s if i == 0 else 1, t))
            c_in = c_out
        stages.append(blocks)
    return _net(f"igcv3_d_{width:g}{'_cifar' if cifar else ''}", cifar, num_classes,
                make_divisible(32 * width), stages, head)


def mobilenet_v1(width: float = 1.0, cifar: bool = False,
                 num_classes: int | None = None) -> NetworkSpec:
    width = check_width(width, 'mobilenet_v1')
    c_in = make_divisible(32 * width)
    strides = _stage_strides([s for _, s in MBV1_TABLE], cifar)
    blocks = []
    for (c, _), s in zip(MBV1_TABLE, strides):
        c_out = make_divisible(c * width)
        blocks.append(dwsep_block(c_in, c_out, s))
        c_in = c_out
    return _net(f"mobilenet_v1_{width:g}{'_cifar' if cifar else ''}", cifar, num_classes,
                make_divisible(32 * width), [[b] for b in blocks], 0, act="relu", dropout=0.0)


def igcv2(width: float = 1.0, cifar: bool = False, num_classes: int | None = None) -> NetworkSpec:
    width = check_width(width, 'igcv2')
    c_in = make_divisible(32 * width)
    strides = _stage_strides([s for _, s in MBV1_TABLE], cifar)
    blocks = []
    for (c, _), s in zip(MBV1_TABLE, strides):
        c_out = make_divisible(c * width)
        blocks.append(igc_chain(c_in, c_out, s))
        c_in = c_out
    return _net(f"igcv2_{width:g}{'_cifar' if cifar else ''}", cifar, num_classes,
                make_divisible(32 * width), [[b] for b in blocks], 0, act="relu", dropout=0.0)


class ZooError(SpecError, KeyError):
    """An unknown zoo name or a width multiplier out of range. Both a KeyError (what
    :func:`get` raised before) and a SpecError; ``str()`` is the plain one-line message."""

    def __init__(self, message: str, bad_width: bool = False):
        super().__init__(message)
        self.bad_width = bad_width

    def __str__(self) -> str:
        return str(self.args[0])


def check_width(width: float, name: str = "width") -> float:
    """``width`` when it is a finite multiplier in (0, MAX_ZOO_WIDTH], else ZooError."""
    if (isinstance(width, bool) or not isinstance(width, (int, float))
            or not 0 < width <= MAX_ZOO_WIDTH):  # NaN fails the comparison too
        raise ZooError(f"{name}: width multiplier {show(width)} is not accepted; expected a number "
                       f"in (0, {MAX_ZOO_WIDTH:g}]", bad_width=True)
    return float(width)


ZOO: dict[str, Callable[..., NetworkSpec]] = {
    "mobilenet_v2": mobilenet_v2,
    "mobilenet_v1": mobilenet_v1,
    "igcv3_d": igcv3_d,
    "igcv2": igcv2,
}


def get(name: str, cifar: bool = False, num_classes: int | None = None) -> NetworkSpec:
    """A reference network as a spec: ``'mobilenet_v2'``, ``'igcv3_d_0.7'``, ``'igcv2_cifar'``,
    ``'mobilenet_v2_1.4_cifar'`` ...

    Args:
        name: ``mobilenet_v2``, ``mobilenet_v1``, ``igcv3_d`` or ``igcv2``, optionally with
            ``_<width>`` (in (0, 8]) and/or ``_cifar``.
        cifar: the CIFAR form (32x32, 10 classes, stem stride 1, no downsampling in the second
            stage), also selected by the ``_cifar`` suffix.
        num_classes: classifier outputs (default: 1000, or 10 for the CIFAR form).

    Returns:
        The :class:`~igcv_nas.arch.spec.NetworkSpec`.

    Raises:
        ZooError: an unknown name or a width out of range, naming what is accepted."""
    if not isinstance(name, str) or len(name) > 100:
        raise ZooError(f"unknown zoo network {show(name)}; accepted: {', '.join(names())}")
    base, width = name, 1.0
    if base.endswith("_cifar"):
        base, cifar = base[: -len("_cifar")], True
    head, _, tail = base.rpartition("_")
    if head in ZOO and tail not in ("", "cifar"):
        try:
            w = float(tail)
        except ValueError:
            w = None
        if w is not None:
            base, width = head, check_width(w, name)
    if base not in ZOO:
        raise ZooError(f"unknown zoo network {show(name)}; accepted: {', '.join(names())} "
                       "(optionally with _<width> and/or _cifar, e.g. igcv3_d_0.7_cifar)")
    return ZOO[base](width=width, cifar=cifar, num_classes=num_classes)


def names() -> list[str]:
    return sorted(ZOO)


def scale_to_macs(name: str, macs: int, input_size: int = 224, num_classes: int = 1000,
                  lo: float = 0.1, hi: float = 4.0,
                  step: float = 0.005) -> tuple[float, NetworkSpec]:
    """``(width, spec)``: the width-scaled hand-designed baseline at a budget: of the width
    multipliers ``lo, lo + step, .. hi`` of zoo network ``name``, the one whose MACs at
    ``input_size`` / ``num_classes`` come closest to ``macs`` without exceeding it (MACs are
    not monotone in the width because channels round to multiples of 8). ValueError when none
    fits."""
    from .cost import count

    if name not in ZOO:
        raise ZooError(f"unknown zoo network {name!r}; accepted: {', '.join(names())}")
    best = None
    for i in range(int(round((hi - lo) / step)) + 1):
        w = round(lo + i * step, 4)
        spec = ZOO[name](width=w).with_target(input_size, num_classes)
        m = count(spec).macs
        if m <= macs and (best is None or m >= best[0]):
            best = (m, w, spec)
    if best is None:
        raise InputError(f"{name} at width {lo} already exceeds {macs:,} MACs")
    return best[1], best[2]
