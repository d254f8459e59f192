"""Architecture specs: frozen, JSON-serializable, hashable descriptions of a network.

No torch here: a spec is validated (``igcv_nas.validate``) and costed (``igcv_nas.arch.cost``)
without building anything; ``igcv_nas.nn.build.build_model`` is the only place it becomes torch.

A network is ``stem -> stages of blocks -> head (1x1 conv) -> global pool -> classifier``.
Every block lists its convolutions explicitly: group sizes as run-length ``[count, in, out]``
triples (``[[2, 16, 48]]`` = two groups of 16 -> 48 channels; ``[[1, 8, 8], [1, 24, 24]]`` =
uneven groups of 8 and 24) and permutations as gather index lists (``y[i] = x[p[i]]``).
Block kinds (``igc``, ``igcv3``, ``mbconv``, ``dwsep`` and any registered one) and the
conv op they reduce to live in :mod:`igcv_nas.arch.blocks` (their registry); the names are
re-exported here.

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
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterator

from .blocks import (BLOCK_KINDS, REQUIRE, Block, ConvOp, DWSepBlock, IGCBlock, IGCLayer,
                     IGCV3Block, MBConvBlock, Runs, SpecError, block_from_dict, check_keys,
                     make_runs, read_int, runs_sum, unstride, unstrided)
from ..units import MAX_BLOCKS, MAX_NESTING, MAX_SPEC_BYTES, read_bounded, show

__all__ = ["ACTS", "BLOCK_KINDS", "REQUIRE", "Block", "ConvOp", "DWSepBlock", "IGCBlock",
           "IGCLayer", "IGCV3Block", "MBConvBlock", "NetworkSpec", "Runs", "SpecError", "Stem",
           "block_from_dict", "from_dict", "from_json", "head_conv", "load", "make_runs",
           "nesting_depth", "parse_json", "read_spec_file", "runs_sum", "stem_conv", "unstrided"]

ACTS = ("relu", "relu6", "hswish", "silu")


# ---------------------------------------------------------------------------------------------
# network

@dataclass(frozen=True)
class Stem:
    out_chs: int
    kernel: int = 3
    stride: int = 2


# The stem and the head as ops: the one place their structure is written down. Cost
# (igcv_nas.arch.cost.ops_cost), the space's bounds, validation, the builder and the latency pieces
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
    follow are not convolutions (:func:`igcv_nas.arch.cost.classifier_cost`)."""
    if head_chs <= 0:
        return None
    return ConvOp(in_chs, head_chs, 1, 1, ((1, in_chs, head_chs),), True)


@dataclass(frozen=True)
class NetworkSpec:
    """A whole network: input -> stem conv -> stages of blocks -> head conv -> pool -> classifier.

    Frozen and JSON-serialisable (:meth:`to_json`, :func:`from_json`, :func:`load`).
    ``canonical_json()`` sorts keys and drops the cosmetic ``name``; its SHA-256 prefix is
    :attr:`arch_id`, so equal architectures have equal ids. ``name`` is a label only.

    Attributes:
        input_size: input resolution (square).
        num_classes: classifier outputs.
        stem: the stem conv (``out_chs``, ``kernel``, ``stride``).
        stages: the blocks, stage by stage.
        head_chs: channels of the head 1x1 conv (0 = no head conv).
        dropout: dropout before the classifier.
        act: activation: relu, relu6, hswish or silu.
        in_chs: input channels.
        name: a label, not part of the architecture.
    """
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

        ``cifar=True`` gives the CIFAR form (the convention of :mod:`igcv_nas.arch.zoo`): the same
        blocks with the stem at stride 1 and the first block of the second stage (index 1) not
        downsampling, so ``zoo.igcv3_d().with_target(32, 10, cifar=True) ==
        zoo.igcv3_d(cifar=True)``; :func:`igcv_nas.arch.space.to_cifar` is this with defaults 32 and
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
            unstride(d["stages"][1][0])
        return from_dict(d)


# ---------------------------------------------------------------------------------------------
# reading specs

_NET_KEYS = {"format", "name", "input_size", "in_chs", "num_classes", "act", "stem", "stages",
             "head_chs", "dropout"}


def from_dict(d: Any) -> NetworkSpec:
    """Read a spec dict (as written by :meth:`NetworkSpec.to_dict`; schemes allowed for perms).

    Args:
        d: the dict form of a spec; named permutation schemes (``{"scheme": "interleave",
            "groups": G}``, ...) are resolved to explicit index lists.

    Returns:
        The :class:`NetworkSpec`.

    Raises:
        SpecError: unknown keys or kinds, wrong types, values over the input limits; one
            line naming the place and the value."""
    check_keys(d, _NET_KEYS, "spec", ("input_size", "num_classes", "stem", "stages"))
    fmt = d.get("format", "igcv-nas/spec@1")
    if fmt != "igcv-nas/spec@1":
        raise SpecError(f"spec: format={show(fmt)}; accepted: 'igcv-nas/spec@1'")
    stem = d["stem"]
    check_keys(stem, {"out_chs", "kernel", "stride"}, "stem", ("out_chs",))
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
        input_size=read_int(d, "input_size", "spec"),
        num_classes=read_int(d, "num_classes", "spec"),
        stem=Stem(read_int(stem, "out_chs", "stem"), read_int(stem, "kernel", "stem", 3),
                  read_int(stem, "stride", "stem", 2)),
        stages=stages, head_chs=read_int(d, "head_chs", "spec", 1280), dropout=float(dropout),
        act=act, in_chs=read_int(d, "in_chs", "spec", 3), name=name)


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
    """Read a spec from JSON text.

    Args:
        text: the JSON document (``str`` or ``bytes``).

    Returns:
        The :class:`NetworkSpec`, as :func:`from_dict` reads it.

    Raises:
        SpecError: malformed JSON, nesting or numbers over the input limits, or anything
            :func:`from_dict` refuses."""
    return from_dict(parse_json(text))


def read_spec_file(path: str | os.PathLike) -> bytes:
    """The bytes of a spec file: a regular file of at most MAX_SPEC_BYTES (SpecError otherwise;
    FIFOs and devices are refused without blocking or reading them)."""
    return read_bounded(path, MAX_SPEC_BYTES, "spec file", SpecError)


def load(path: str | os.PathLike) -> NetworkSpec:
    """Read a spec JSON file.

    Args:
        path: a regular file of at most ``MAX_SPEC_BYTES`` (FIFOs and devices are refused
            without being read).

    Returns:
        The :class:`NetworkSpec`.

    Raises:
        SpecError: on any problem, with a one-line message naming the file."""
    raw = read_spec_file(path)
    try:
        return from_json(raw)
    except SpecError as e:
        raise SpecError(f"{path}: {e}") from None
