"""Architecture specs: frozen, JSON-serializable, hashable descriptions of a network.

No torch here: a spec is validated (``igcv_nas.validate``) and costed (``igcv_nas.cost``)
without building anything; ``igcv_nas.build.build_model`` is the only place it becomes torch.

A network is ``stem -> stages of blocks -> head (1x1 conv) -> global pool -> classifier``.
Every block lists its convolutions explicitly: group sizes as run-length ``[count, in, out]``
triples (``[[2, 16, 48]]`` = two groups of 16 -> 48 channels; ``[[1, 8, 8], [1, 24, 24]]`` =
uneven groups of 8 and 24) and permutations as gather index lists (``y[i] = x[p[i]]``).
Block kinds:

* ``igc``    -- interleaved structured-sparse chain (IGCV1 / IGCV2): L >= 2 group convs, the
               first may be spatial, the rest 1x1, each followed by BN, optional activation and
               an optional permutation.
* ``igcv3``  -- interleaved low-rank group bottleneck: 1x1 group expansion, permutation, kxk
               depthwise, 1x1 group projection, permutation back; linear bottleneck; residual
               when stride 1 and in == out.
* ``mbconv`` -- MobileNetV2 inverted residual (dense 1x1 expansion, depthwise, dense projection).
* ``dwsep``  -- MobileNetV1 depthwise-separable conv.

Each block reduces to a tuple of :class:`ConvOp` (``block.ops``) that cost, validation and the
builder share, so what is counted is what is built; so do the stem and the head conv
(:attr:`NetworkSpec.stem_op`, :attr:`NetworkSpec.head_op`, :meth:`NetworkSpec.ops`, written down
once in :func:`stem_conv` and :func:`head_conv`). :meth:`NetworkSpec.with_target` is the one
transform of a spec to another resolution, class count or the CIFAR form.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterator, NamedTuple, Union

from .errors import IGCVError
from . import perm as _perm
from .units import (MAX_BLOCKS, MAX_CHANNELS, MAX_CLASSES, MAX_IGC_LAYERS, MAX_INPUT_SIZE,
                    MAX_KERNEL, MAX_NESTING, MAX_SPEC_BYTES, MAX_STRIDE, read_bounded, show)

Runs = tuple[tuple[int, int, int], ...]
ACTS = ("relu", "relu6", "hswish", "silu")
REQUIRE = ("exact", "relaxed", "none")


class SpecError(IGCVError, ValueError):
    """A spec that cannot be read (malformed, unknown kind or key, wrong type)."""


# ---------------------------------------------------------------------------------------------
# group runs

def make_runs(groups: Any, in_chs: int, out_chs: int, where: str) -> Runs:
    """Canonical run-length groups from an int G (even groups) or a list of runs / [in, out]
    pairs."""
    if isinstance(groups, bool):
        raise SpecError(f"{where}: groups={show(groups)}; "
                        "expected an int or a list of [count, in, out]")
    if isinstance(groups, int):
        if groups <= 0 or in_chs % groups or out_chs % groups:
            raise SpecError(f"{where}: groups={show(groups)} must divide in_chs={show(in_chs)} "
                            f"and out_chs={show(out_chs)}")
        return ((groups, in_chs // groups, out_chs // groups),)
    if not isinstance(groups, (list, tuple)) or not groups:
        raise SpecError(f"{where}: groups={show(groups)}; "
                        "expected an int or a list of [count, in, out]")
    runs: list[list[int]] = []
    tot_in = tot_out = 0
    for r in groups:
        if not isinstance(r, (list, tuple)) or len(r) not in (2, 3) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in r):
            raise SpecError(f"{where}: group run {show(r)}; "
                            "expected [count, in, out] or [in, out] of ints")
        c, i, o = (1, *r) if len(r) == 2 else r
        if c <= 0 or i <= 0 or o <= 0:
            raise SpecError(f"{where}: group run {show(list(r))} has a non-positive size")
        tot_in, tot_out = tot_in + c * i, tot_out + c * o
        if max(tot_in, tot_out) > MAX_CHANNELS:  # before anything is expanded per group
            raise SpecError(f"{where}: group sizes sum to more than {MAX_CHANNELS:,} channels; "
                            f"accepted: at most {MAX_CHANNELS:,} (MAX_CHANNELS)")
        if runs and runs[-1][1] == i and runs[-1][2] == o:
            runs[-1][0] += c
        else:
            runs.append([c, i, o])
    return tuple(tuple(r) for r in runs)  # type: ignore[return-value]


def runs_sum(runs: Runs) -> tuple[int, int, int]:
    """(number of groups, input channels, output channels) of a run list."""
    return (sum(r[0] for r in runs), sum(r[0] * r[1] for r in runs), sum(r[0] * r[2] for r in runs))


# ---------------------------------------------------------------------------------------------
# the shared per-convolution view

class ConvOp(NamedTuple):
    """One conv + BN (+ activation) (+ channel permutation of its output).

    A NamedTuple rather than a dataclass: specs are costed by the ten thousand per second and
    tuple creation is several times cheaper than a frozen dataclass's ``__init__``."""
    in_chs: int
    out_chs: int
    kernel: int
    stride: int
    groups: Runs
    act: bool
    perm: tuple[int, ...] | None = None


# ---------------------------------------------------------------------------------------------
# blocks

def _perm_json(p: tuple[int, ...] | None) -> list[int] | None:
    return None if p is None else list(p)


@dataclass(frozen=True)
class IGCLayer:
    out_chs: int
    kernel: int
    stride: int
    groups: Runs
    perm: tuple[int, ...] | None
    act: bool

    def to_dict(self) -> dict:
        return {"out_chs": self.out_chs, "kernel": self.kernel, "stride": self.stride,
                "groups": [list(r) for r in self.groups], "perm": _perm_json(self.perm),
                "act": self.act}


@dataclass(frozen=True)
class IGCBlock:
    in_chs: int
    layers: tuple[IGCLayer, ...]
    residual: bool = False
    require: str = "relaxed"
    kind: str = field(default="igc", init=False)
    ops: tuple[ConvOp, ...] = field(init=False, repr=False, compare=False)

    @property
    def out_chs(self) -> int:
        return self.layers[-1].out_chs

    @property
    def stride(self) -> int:
        s = 1
        for layer in self.layers:
            s *= layer.stride
        return s

    def __post_init__(self) -> None:
        # derived once at construction: cost, validation and the builder all read it
        object.__setattr__(self, "ops", self._ops())

    def _ops(self) -> tuple[ConvOp, ...]:
        ops, c = [], self.in_chs
        for layer in self.layers:
            ops.append(ConvOp(c, layer.out_chs, layer.kernel, layer.stride, layer.groups,
                              layer.act, layer.perm))
            c = layer.out_chs
        return tuple(ops)

    def to_dict(self) -> dict:
        return {"kind": "igc", "in_chs": self.in_chs, "residual": self.residual,
                "require": self.require, "layers": [layer.to_dict() for layer in self.layers]}


@dataclass(frozen=True)
class IGCV3Block:
    in_chs: int
    out_chs: int
    stride: int
    expand_chs: int
    kernel: int
    expand_groups: Runs
    project_groups: Runs
    perm_expand: tuple[int, ...] | None
    perm_project: tuple[int, ...] | None
    require: str = "relaxed"
    kind: str = field(default="igcv3", init=False)
    ops: tuple[ConvOp, ...] = field(init=False, repr=False, compare=False)

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_chs == self.out_chs

    def __post_init__(self) -> None:
        # derived once at construction: cost, validation and the builder all read it
        object.__setattr__(self, "ops", self._ops())

    def _ops(self) -> tuple[ConvOp, ...]:
        e = self.expand_chs
        return (ConvOp(self.in_chs, e, 1, 1, self.expand_groups, False, self.perm_expand),
                ConvOp(e, e, self.kernel, self.stride, ((e, 1, 1),), True, None),
                ConvOp(e, self.out_chs, 1, 1, self.project_groups, False, self.perm_project))

    def to_dict(self) -> dict:
        return {"kind": "igcv3", "in_chs": self.in_chs, "out_chs": self.out_chs,
                "stride": self.stride, "expand_chs": self.expand_chs, "kernel": self.kernel,
                "expand_groups": [list(r) for r in self.expand_groups],
                "project_groups": [list(r) for r in self.project_groups],
                "perm_expand": _perm_json(self.perm_expand),
                "perm_project": _perm_json(self.perm_project), "require": self.require}


@dataclass(frozen=True)
class MBConvBlock:
    in_chs: int
    out_chs: int
    stride: int
    expand_chs: int
    kernel: int
    kind: str = field(default="mbconv", init=False)
    ops: tuple[ConvOp, ...] = field(init=False, repr=False, compare=False)

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_chs == self.out_chs

    def __post_init__(self) -> None:
        # derived once at construction: cost, validation and the builder all read it
        object.__setattr__(self, "ops", self._ops())

    def _ops(self) -> tuple[ConvOp, ...]:
        e, ops = self.expand_chs, []
        if e != self.in_chs:  # MobileNetV2 t = 1 blocks have no expansion conv
            ops.append(ConvOp(self.in_chs, e, 1, 1, ((1, self.in_chs, e),), True))
        ops.append(ConvOp(e, e, self.kernel, self.stride, ((e, 1, 1),), True))
        ops.append(ConvOp(e, self.out_chs, 1, 1, ((1, e, self.out_chs),), False))
        return tuple(ops)

    def to_dict(self) -> dict:
        return {"kind": "mbconv", "in_chs": self.in_chs, "out_chs": self.out_chs,
                "stride": self.stride, "expand_chs": self.expand_chs, "kernel": self.kernel}


@dataclass(frozen=True)
class DWSepBlock:
    in_chs: int
    out_chs: int
    stride: int
    kernel: int
    kind: str = field(default="dwsep", init=False)
    residual: bool = field(default=False, init=False)
    ops: tuple[ConvOp, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # derived once at construction: cost, validation and the builder all read it
        object.__setattr__(self, "ops", self._ops())

    def _ops(self) -> tuple[ConvOp, ...]:
        c = self.in_chs
        return (ConvOp(c, c, self.kernel, self.stride, ((c, 1, 1),), True),
                ConvOp(c, self.out_chs, 1, 1, ((1, c, self.out_chs),), True))

    def to_dict(self) -> dict:
        return {"kind": "dwsep", "in_chs": self.in_chs, "out_chs": self.out_chs,
                "stride": self.stride, "kernel": self.kernel}


Block = Union[IGCBlock, IGCV3Block, MBConvBlock, DWSepBlock]
BLOCK_KINDS = ("igc", "igcv3", "mbconv", "dwsep")


# ---------------------------------------------------------------------------------------------
# network

@dataclass(frozen=True)
class Stem:
    out_chs: int
    kernel: int = 3
    stride: int = 2


# The stem and the head as ops: the one place their structure is written down. Cost
# (igcv_nas.cost.ops_cost), the space's bounds, validation, the builder and the latency pieces
# all take them from here.

def stem_conv(in_chs: int, stem: Stem) -> ConvOp:
    """The stem as a :class:`ConvOp`: dense ``kernel`` x ``kernel`` conv of stride ``stride``
    from the ``in_chs`` input channels, BN and the activation; no permutation."""
    return ConvOp(in_chs, stem.out_chs, stem.kernel, stem.stride, ((1, in_chs, stem.out_chs),),
                  True)


def head_conv(in_chs: int, head_chs: int) -> ConvOp | None:
    """The head conv as a :class:`ConvOp`: dense 1x1 conv from the last block's ``in_chs``
    channels to ``head_chs``, BN and the activation; None when ``head_chs <= 0`` (no head conv:
    the last block's channels enter the classifier). The global pool and the classifier that
    follow are not convolutions (:func:`igcv_nas.cost.classifier_cost`)."""
    if head_chs <= 0:
        return None
    return ConvOp(in_chs, head_chs, 1, 1, ((1, in_chs, head_chs),), True)


@dataclass(frozen=True)
class NetworkSpec:
    """A whole network. ``name`` is a label only; it is not part of :attr:`arch_id`."""
    input_size: int
    num_classes: int
    stem: Stem
    stages: tuple[tuple[Block, ...], ...]
    head_chs: int = 1280
    dropout: float = 0.2
    act: str = "relu6"
    in_chs: int = 3
    name: str = ""

    def blocks(self) -> Iterator[tuple[str, Block]]:
        """(label, block) in forward order; labels are ``s<stage>.b<index>``."""
        for si, stage in enumerate(self.stages):
            for bi, block in enumerate(stage):
                yield f"s{si}.b{bi}", block

    @property
    def stem_op(self) -> ConvOp:
        """The stem as a conv op (:func:`stem_conv`)."""
        return stem_conv(self.in_chs, self.stem)

    @property
    def last_chs(self) -> int:
        """Channels leaving the last block (the stem's when there is none)."""
        last = self.stem.out_chs
        for stage in self.stages:
            if stage:
                last = stage[-1].out_chs
        return last

    @property
    def head_op(self) -> ConvOp | None:
        """The head conv as a conv op, None without one (:func:`head_conv`)."""
        return head_conv(self.last_chs, self.head_chs)

    def ops(self) -> Iterator[tuple[str, tuple[ConvOp, ...], bool]]:
        """``(label, ops, residual)`` of every conv piece in forward order: ``("stem",
        (stem_op,), False)``, every block (``s<i>.b<j>``, its ops, its residual flag), then
        ``("head", (head_op,), False)`` when there is a head conv. The global pool and the
        classifier (``feature_chs`` -> ``num_classes``) follow."""
        yield "stem", (self.stem_op,), False
        for label, b in self.blocks():
            yield label, b.ops, bool(b.residual)
        head = self.head_op
        if head is not None:
            yield "head", (head,), False

    @property
    def feature_chs(self) -> int:
        """Channels entering the classifier."""
        head = self.head_op
        return self.last_chs if head is None else head.out_chs

    def to_dict(self) -> dict:
        return {"format": "igcv-nas/spec@1", "name": self.name, "input_size": self.input_size,
                "in_chs": self.in_chs, "num_classes": self.num_classes, "act": self.act,
                "stem": {"out_chs": self.stem.out_chs, "kernel": self.stem.kernel,
                         "stride": self.stem.stride},
                "stages": [[b.to_dict() for b in stage] for stage in self.stages],
                "head_chs": self.head_chs, "dropout": self.dropout}

    def canonical_json(self) -> str:
        """Sorted keys, no whitespace, without ``name``: equal architectures give equal strings."""
        d = self.to_dict()
        d.pop("name")
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    @cached_property
    def arch_id(self) -> str:
        """Stable id: first 16 hex digits of the SHA-256 of :meth:`canonical_json`."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:16]

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def with_target(self, input_size: int | None = None, num_classes: int | None = None,
                    cifar: bool = False) -> NetworkSpec:
        """This network at another input resolution and/or number of classes (None or 0: keep
        this spec's): the one target transform.

        ``cifar=True`` gives the CIFAR form (the convention of :mod:`igcv_nas.zoo`): the same
        blocks with the stem at stride 1 and the first block of the second stage (index 1) not
        downsampling, so ``zoo.igcv3_d().with_target(32, 10, cifar=True) ==
        zoo.igcv3_d(cifar=True)``; :func:`igcv_nas.space.to_cifar` is this with defaults 32 and
        10."""
        input_size = input_size or self.input_size
        num_classes = num_classes or self.num_classes
        if not cifar:
            import dataclasses
            return dataclasses.replace(self, input_size=input_size, num_classes=num_classes)
        d = self.to_dict()
        d["input_size"], d["num_classes"] = input_size, num_classes
        d["stem"]["stride"] = 1
        if len(d["stages"]) > 1 and d["stages"][1]:
            _unstride(d["stages"][1][0])
        return from_dict(d)


def _unstride(d: dict) -> dict:
    """A block dict made not to downsample (every stride 1), in place."""
    if d["kind"] == "igc":
        for layer in d["layers"]:
            layer["stride"] = 1
    else:
        d["stride"] = 1
    return d


def unstrided(block: Block) -> Block:
    """``block`` with every stride 1: the first block of the second stage in the CIFAR form
    (:meth:`NetworkSpec.with_target` with ``cifar=True``)."""
    return block_from_dict(_unstride(block.to_dict()))


# ---------------------------------------------------------------------------------------------
# reading specs

_NET_KEYS = {"format", "name", "input_size", "in_chs", "num_classes", "act", "stem", "stages",
             "head_chs", "dropout"}
_BLOCK_KEYS = {
    "igc": {"kind", "in_chs", "residual", "require", "layers"},
    "igcv3": {"kind", "in_chs", "out_chs", "stride", "expand_chs", "kernel", "expand_groups",
              "project_groups", "perm_expand", "perm_project", "require"},
    "mbconv": {"kind", "in_chs", "out_chs", "stride", "expand_chs", "kernel"},
    "dwsep": {"kind", "in_chs", "out_chs", "stride", "kernel"},
}
_LAYER_KEYS = {"out_chs", "kernel", "stride", "groups", "perm", "act"}


def _check_keys(d: Any, allowed: set[str], where: str, required: tuple[str, ...] = ()) -> None:
    if not isinstance(d, dict):
        raise SpecError(f"{where}: expected an object, got {type(d).__name__}")
    extra = sorted(set(d) - allowed)
    if extra:
        raise SpecError(f"{where}: unknown key {show(extra[0])}; "
                        f"accepted: {', '.join(sorted(allowed))}")
    for k in required:
        if k not in d:
            raise SpecError(f"{where}: missing key {k!r}")


# upper bound and the lower bound quoted with it; values below the quoted lower bound but above
# its negative are left to validation.check (which reports e.g. "channels must be positive")
_BOUNDS = {"in_chs": (1, MAX_CHANNELS), "out_chs": (1, MAX_CHANNELS),
           "expand_chs": (1, MAX_CHANNELS), "head_chs": (0, MAX_CHANNELS),
           "kernel": (1, MAX_KERNEL), "stride": (1, MAX_STRIDE),
           "input_size": (1, MAX_INPUT_SIZE), "num_classes": (1, MAX_CLASSES)}


def _int(d: dict, key: str, where: str, default: int | None = None) -> int:
    v = d.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool):
        raise SpecError(f"{where}: {key}={show(v)} must be an integer")
    lo, hi = _BOUNDS[key]
    if abs(v) > hi:
        raise SpecError(f"{where}: {key}={show(v)} is out of range; accepted: {lo}..{hi:,}")
    return v


def _require(d: dict, where: str) -> str:
    r = d.get("require", "relaxed")
    if r not in REQUIRE:
        raise SpecError(f"{where}: require={show(r)}; accepted: {', '.join(REQUIRE)}")
    return r


def _sizes(runs: Runs, side: int) -> list[int]:
    return _perm.expand_runs(runs, side)


def _resolve_perm(p: Any, c: int, prev: Runs | None, nxt: Runs | None, where: str):
    if p is None:
        return None
    try:
        out = _perm.resolve(p, c, _sizes(prev, 2) if prev else None,
                            _sizes(nxt, 1) if nxt else None)
    except (ValueError, TypeError, OverflowError) as e:
        raise SpecError(f"{where}: {e}") from None
    # the identity is no permutation: one canonical form, so equal architectures share an id
    return None if out == tuple(range(len(out))) and len(out) == c else out


def block_from_dict(d: Any, where: str = "block") -> Block:
    kind = d.get("kind") if isinstance(d, dict) else None
    if not isinstance(kind, str) or kind not in _BLOCK_KINDS_SET:
        kind = d.get("kind") if isinstance(d, dict) else d
        raise SpecError(f"{where}: unknown block kind {show(kind)}; "
                        f"accepted: {', '.join(BLOCK_KINDS)}")
    kind = d["kind"]
    _check_keys(d, _BLOCK_KEYS[kind], where, tuple(sorted(_BLOCK_KEYS[kind] - {
        "kind", "require", "residual", "perm_expand", "perm_project", "expand_chs", "kernel"})))
    cin = _int(d, "in_chs", where)
    if kind == "igc":
        raw = d["layers"]
        if not isinstance(raw, list) or not raw:
            raise SpecError(f"{where}: layers must be a non-empty list")
        if len(raw) > MAX_IGC_LAYERS:
            raise SpecError(f"{where}: {len(raw):,} layers; accepted: at most {MAX_IGC_LAYERS} "
                            "convs in an igc chain")
        c, parsed = cin, []
        for li, ld in enumerate(raw):
            lw = f"{where}.layer{li}"
            _check_keys(ld, _LAYER_KEYS, lw, ("out_chs", "groups"))
            out = _int(ld, "out_chs", lw)
            runs = make_runs(ld["groups"], c, out, lw)
            parsed.append((ld, out, runs))
            c = out
        layers = []
        for li, (ld, out, runs) in enumerate(parsed):
            lw = f"{where}.layer{li}"
            nxt = parsed[li + 1][2] if li + 1 < len(parsed) else None
            layers.append(IGCLayer(out, _int(ld, "kernel", lw, 1), _int(ld, "stride", lw, 1), runs,
                                   _resolve_perm(ld.get("perm"), out, runs, nxt, lw + ".perm"),
                                   bool(ld.get("act", li == len(parsed) - 1))))
        return IGCBlock(cin, tuple(layers), bool(d.get("residual", False)), _require(d, where))
    cout, s = _int(d, "out_chs", where), _int(d, "stride", where)
    k = _int(d, "kernel", where, 3)
    if kind == "dwsep":
        return DWSepBlock(cin, cout, s, k)
    e = _int(d, "expand_chs", where, cin)
    if kind == "mbconv":
        return MBConvBlock(cin, cout, s, e, k)
    eg = make_runs(d["expand_groups"], cin, e, where + ".expand_groups")
    pg = make_runs(d["project_groups"], e, cout, where + ".project_groups")
    # the depthwise conv between expansion and projection does not mix channels, so
    # 'complement' for perm_expand deals expansion groups over projection groups
    return IGCV3Block(cin, cout, s, e, k, eg, pg,
                      _resolve_perm(d.get("perm_expand"), e, eg, pg, where + ".perm_expand"),
                      _resolve_perm(d.get("perm_project"), cout, pg, None, where + ".perm_project"),
                      _require(d, where))


_BLOCK_KINDS_SET = set(BLOCK_KINDS)


def from_dict(d: Any) -> NetworkSpec:
    """Read a spec dict (as written by :meth:`NetworkSpec.to_dict`; schemes allowed for perms)."""
    _check_keys(d, _NET_KEYS, "spec", ("input_size", "num_classes", "stem", "stages"))
    fmt = d.get("format", "igcv-nas/spec@1")
    if fmt != "igcv-nas/spec@1":
        raise SpecError(f"spec: format={show(fmt)}; accepted: 'igcv-nas/spec@1'")
    stem = d["stem"]
    _check_keys(stem, {"out_chs", "kernel", "stride"}, "stem", ("out_chs",))
    act = d.get("act", "relu6")
    if not isinstance(act, str) or act not in ACTS:
        raise SpecError(f"spec: act={show(act)}; accepted: {', '.join(ACTS)}")
    stages_raw = d["stages"]
    if not isinstance(stages_raw, list) or not all(isinstance(s, list) for s in stages_raw):
        raise SpecError("spec: stages must be a list of lists of blocks")
    n_blocks = sum(len(s) for s in stages_raw)
    if n_blocks > MAX_BLOCKS:
        raise SpecError(f"spec: {n_blocks:,} blocks; accepted: at most {MAX_BLOCKS:,} (MAX_BLOCKS)")
    stages = tuple(tuple(block_from_dict(b, f"s{si}.b{bi}") for bi, b in enumerate(stage))
                   for si, stage in enumerate(stages_raw))
    dropout = d.get("dropout", 0.2)
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        raise SpecError(f"spec: dropout={show(dropout)} must be a number in [0, 1)")
    name = d.get("name", "")
    if not isinstance(name, str) or len(name) > MAX_NAME or not name.isprintable():
        raise SpecError(f"spec: name={show(name)} must be a string of at most {MAX_NAME} "
                        "printable characters (no newlines or control characters)")
    return NetworkSpec(
        input_size=_int(d, "input_size", "spec"), num_classes=_int(d, "num_classes", "spec"),
        stem=Stem(_int(stem, "out_chs", "stem"), _int(stem, "kernel", "stem", 3),
                  _int(stem, "stride", "stem", 2)),
        stages=stages, head_chs=_int(d, "head_chs", "spec", 1280), dropout=float(dropout),
        act=act, in_chs=_int(d, "in_chs", "spec", 3), name=name)


MAX_NAME = 256  # characters of a spec's name
_MAX_INT_DIGITS = 40  # no spec value needs more; longer numbers are refused while parsing


def _parse_int(text: str) -> int:
    if len(text) > _MAX_INT_DIGITS:  # int() of a long digit string is quadratic
        raise SpecError(f"spec: a number with {len(text):,} digits; accepted: integers of at most "
                        f"{_MAX_INT_DIGITS} digits")
    return int(text)


def nesting_depth(obj: Any, limit: int = MAX_NESTING) -> int:
    """Depth of nested lists / dicts / tuples in ``obj`` (a scalar is 0), computed without
    recursion; stops counting once ``limit`` is exceeded (returns ``limit + 1``)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        vals = o.values() if isinstance(o, dict) else o if isinstance(o, (list, tuple)) else None
        if vals is None:
            continue
        if d > limit:
            return limit + 1
        deepest = max(deepest, d)
        stack.extend((v, d + 1) for v in vals if isinstance(v, (dict, list, tuple)))
    return deepest


def parse_json(text: str | bytes, where: str = "spec") -> Any:
    """JSON text to Python, bounded: SpecError (one line, prefixed ``where``) when it is not
    UTF-8, malformed, nested deeper than MAX_NESTING or holds a number of more than 40 digits."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SpecError(f"{where}: not UTF-8 text (byte {e.start:,}); accepted: a UTF-8 "
                            "JSON file") from None
    too_deep = SpecError(f"{where}: JSON nested deeper than {MAX_NESTING} levels; accepted: at "
                         f"most {MAX_NESTING}")
    try:
        d = json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as e:
        raise SpecError(f"{where}: malformed JSON at line {e.lineno} column {e.colno}: "
                        f"{e.msg}") from None
    except RecursionError:  # the C decoder recurses once per level
        raise too_deep from None
    except SpecError as e:
        raise SpecError(f"{where}: {str(e).removeprefix('spec: ')}") from None
    if nesting_depth(d) > MAX_NESTING:
        raise too_deep
    return d


def from_json(text: str | bytes) -> NetworkSpec:
    return from_dict(parse_json(text))


def read_spec_file(path: str | os.PathLike) -> bytes:
    """The bytes of a spec file: a regular file of at most MAX_SPEC_BYTES (SpecError otherwise;
    FIFOs and devices are refused without blocking or reading them)."""
    return read_bounded(path, MAX_SPEC_BYTES, "spec file", SpecError)


def load(path: str | os.PathLike) -> NetworkSpec:
    """Read a spec JSON file (SpecError on any problem, with a one-line message)."""
    raw = read_spec_file(path)
    try:
        return from_json(raw)
    except SpecError as e:
        raise SpecError(f"{path}: {e}") from None
