"""Blocks: the conv op every block reduces to, group runs, and the registry of block kinds.

No torch here. A block is a frozen dataclass with ``kind``, ``in_chs``, ``out_chs``, ``stride``,
``residual``, ``ops`` (a tuple of :class:`ConvOp`: what cost, validation and the builder read)
and ``to_dict()`` (its spec dict, ``{"kind": ..., ...}``). Each block kind is one
:class:`BlockKind` record, registered with :func:`register_block_kind` (timm's
``register_model`` idea): its dataclass, how its dict is read, the keys a search space asks of
it and how a space makes its dict from them, how it is made not to downsample, and its
kind-specific validation. :func:`block_from_dict` (spec files), :mod:`igcv_nas.arch.space` (YAML
spaces), :mod:`igcv_nas.arch.validation` and the CIFAR form (:func:`unstrided`) dispatch through the
registry; the builder (:mod:`igcv_nas.nn.build`) and the cost model build and count any block from
its ``ops`` and ``residual``, so a new kind needs nothing there.

Built-in kinds, one section each below (dataclass, dict builder the zoo uses, parser, space
dict, registration):

* ``igc``    -- interleaved structured-sparse chain (IGCV1 / IGCV2): L >= 2 group convs, the
               first may be spatial, the rest 1x1, each followed by BN, optional activation and
               an optional permutation.
* ``igcv3``  -- interleaved low-rank group bottleneck: 1x1 group expansion, permutation, kxk
               depthwise, 1x1 group projection, permutation back; linear bottleneck; residual
               when stride 1 and in == out.
* ``mbconv`` -- MobileNetV2 inverted residual (dense 1x1 expansion, depthwise, dense projection).
* ``dwsep``  -- MobileNetV1 depthwise-separable conv.

Adding a kind (README, Development): a dataclass as above, a ``parse(d, where)`` that reads its dict
with :func:`read_int` / :func:`read_require` / :func:`resolve_perm` / :func:`make_runs`, a
``space_dict(c_in, c_out, stride, choices, require, perms)`` and one ``register_block_kind`` call.
Registration order is the order of "accepted: ..." lists and of the learned latency model's kind
codes (:func:`igcv_nas.evaluate.latency_model.kind_code`): add kinds after the built-ins.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Union

from ..errors import IGCVError, InputError
from . import perm as _perm
from ..units import (MAX_CHANNELS, MAX_CLASSES, MAX_IGC_LAYERS, MAX_INPUT_SIZE, MAX_KERNEL,
                     MAX_STRIDE, show)

__all__ = ["BLOCK_KINDS", "Block", "BlockKind", "ConvOp", "DWSepBlock", "IGCBlock", "IGCLayer",
           "IGCV3Block", "MBConvBlock", "REQUIRE", "Runs", "SpaceKey", "SpecError",
           "block_from_dict", "block_kind", "block_kinds", "check_keys", "dwsep_block",
           "group_arg", "igc_chain", "igc_groups", "igc_min_layers", "igcv3_block", "make_runs",
           "mbconv_block", "ratio", "read_int", "read_require", "register_block_kind",
           "resolve_perm", "runs_sum", "unregister_block_kind", "unstride", "unstrided"]

Runs = tuple[tuple[int, int, int], ...]
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
    return tuple((r[0], r[1], r[2]) for r in runs)


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
# reading a block dict: the helpers every kind's parser uses (one-line SpecErrors)

def check_keys(d: Any, allowed: set[str] | frozenset[str], where: str,
               required: tuple[str, ...] = ()) -> None:
    """SpecError unless ``d`` is a dict whose keys are in ``allowed`` and include ``required``."""
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
BOUNDS = {"in_chs": (1, MAX_CHANNELS), "out_chs": (1, MAX_CHANNELS),
          "expand_chs": (1, MAX_CHANNELS), "head_chs": (0, MAX_CHANNELS),
          "kernel": (1, MAX_KERNEL), "stride": (1, MAX_STRIDE),
          "input_size": (1, MAX_INPUT_SIZE), "num_classes": (1, MAX_CLASSES)}


def read_int(d: dict, key: str, where: str, default: int | None = None,
             bounds: tuple[int, int] | None = None) -> int:
    """``d[key]`` (or ``default``) as an integer within ``bounds`` (default: :data:`BOUNDS`
    of ``key``); SpecError otherwise."""
    v = d.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool):
        raise SpecError(f"{where}: {key}={show(v)} must be an integer")
    lo, hi = bounds or BOUNDS[key]
    if abs(v) > hi:
        raise SpecError(f"{where}: {key}={show(v)} is out of range; accepted: {lo}..{hi:,}")
    return v


def read_require(d: dict, where: str) -> str:
    """The block's ``require`` (default relaxed); SpecError when not one of :data:`REQUIRE`."""
    r = d.get("require", "relaxed")
    if r not in REQUIRE:
        raise SpecError(f"{where}: require={show(r)}; accepted: {', '.join(REQUIRE)}")
    return r


def resolve_perm(p: Any, c: int, prev: Runs | None, nxt: Runs | None,
                 where: str) -> tuple[int, ...] | None:
    """A permutation of ``c`` channels from a list or a scheme (``complement`` deals the groups
    ``prev`` produces over the groups ``nxt`` reads); None for the identity."""
    if p is None:
        return None
    try:
        out = _perm.resolve(p, c, _perm.expand_runs(prev, 2) if prev else None,
                            _perm.expand_runs(nxt, 1) if nxt else None)
    except (ValueError, TypeError, OverflowError) as e:
        raise SpecError(f"{where}: {e}") from None
    # the identity is no permutation: one canonical form, so equal architectures share an id
    return None if out == tuple(range(len(out))) and len(out) == c else out


def _perm_json(p: tuple[int, ...] | None) -> list[int] | None:
    return None if p is None else list(p)


def ratio(g: Any) -> tuple[int, ...] | None:
    """A space's ratio choice (``"1:3"``) as a tuple, None for anything else."""
    return tuple(int(x) for x in g.split(":")) if isinstance(g, str) else None


def group_arg(g: Any, c_in: int, c_out: int) -> Any:
    """Spec ``groups`` value of a space's group choice: an int G, or run-length groups for a
    ratio (dividing both sides)."""
    r = ratio(g)
    if r is None:
        return g
    s = sum(r)
    if c_in % s or c_out % s:
        raise SpecError(f"ratio {list(r)} (sum {s}) must divide both channel counts of the "
                        f"{c_in}->{c_out} conv")
    return [[1, c_in * a // s, c_out * a // s] for a in r]


# ---------------------------------------------------------------------------------------------
# the registry

class SpaceKey(NamedTuple):
    """A search-space key a kind adds to the shipped ones (``expand``, ``kernel``, ``g1``,
    ``g2``, ``K``, ``L``, ``residual``): ``check(yaml value) -> trial value or None`` (None: not
    accepted), ``accepted`` (what the error message says is accepted), ``default`` (choices
    when a file does not set it)."""
    check: Callable[[Any], Any]
    accepted: str
    default: tuple


def _unstride_flat(d: dict) -> None:
    d["stride"] = 1


def _no_checks(block: Any, label: str) -> list[tuple[str, str]]:
    return []


def _no_balance(block: Any) -> float | None:
    return None


@dataclass(frozen=True)
class BlockKind:
    """One block kind: everything the torch-free core knows that is particular to it.

    * ``name``: the ``kind`` of its dicts; ``cls``: its frozen dataclass (``kind``, ``in_chs``,
      ``out_chs``, ``stride``, ``residual``, ``ops``, ``to_dict()``).
    * ``keys``: the keys its dict accepts besides ``kind``; ``optional``: those of them that
      have a default (the rest are required); ``parse(d, where) -> block`` reads a dict whose
      keys are already checked (:func:`block_from_dict`); the dict form is ``block.to_dict()``.
    * ``space_keys``: the search-space keys a block of this kind asks the trial, in order;
      ``space_dict(c_in, c_out, stride, choices, require, perms) -> dict`` is its spec dict from
      those choices (``perms=False``: without permutations, for counting MACs only);
      ``new_space_keys``: keys of ``space_keys`` the shipped spaces do not know
      (:class:`SpaceKey`). A choice of ``expand`` is checked against MAX_CHANNELS as
      ``in_chs * expand`` before the block is built.
    * ``unstride(d)``: makes a block dict not downsample, in place (default: ``stride = 1``).
    * ``check(block, label) -> [(where, message)]``: kind-specific violations for
      :func:`igcv_nas.arch.validation.check` (its conv ops are checked generically);
      ``balance(block)``: the IGCV2 balance ratio it reports, or None.
    """
    name: str
    cls: type
    keys: tuple[str, ...]
    optional: tuple[str, ...]
    parse: Callable[[dict, str], Any]
    space_keys: tuple[str, ...]
    space_dict: Callable[..., dict]
    new_space_keys: dict[str, SpaceKey] = field(default_factory=dict)
    unstride: Callable[[dict], None] = _unstride_flat
    check: Callable[[Any, str], list[tuple[str, str]]] = _no_checks
    balance: Callable[[Any], float | None] = _no_balance
    accepted: frozenset[str] = field(init=False, repr=False)
    required: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "accepted", frozenset({"kind", *self.keys}))
        object.__setattr__(self, "required", tuple(sorted(set(self.keys) - set(self.optional))))


_KINDS: dict[str, BlockKind] = {}
_BUILTIN: set[str] = set()


def register_block_kind(kind: BlockKind) -> BlockKind:
    """Add ``kind`` to the registry (after those already there); InputError when its name is
    taken or not a plain identifier. Returns ``kind``."""
    if not isinstance(kind, BlockKind):
        raise InputError(f"register_block_kind: expected a BlockKind, got {type(kind).__name__}")
    if not kind.name.isidentifier() or kind.name in ("stem", "head"):
        raise InputError(f"block kind name {show(kind.name)} is not accepted; expected an "
                         "identifier other than stem and head")
    if kind.name in _KINDS:
        raise InputError(f"block kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def unregister_block_kind(name: str) -> None:
    """Remove a kind registered with :func:`register_block_kind` (the built-ins stay)."""
    if name in _BUILTIN:
        raise InputError(f"block kind {name!r} is built in and cannot be removed")
    _KINDS.pop(name, None)


def block_kind(name: str) -> BlockKind:
    """The registered kind ``name`` (KeyError when there is none)."""
    return _KINDS[name]


def block_kinds() -> tuple[str, ...]:
    """Names of the registered kinds, in registration order (the built-ins first)."""
    return tuple(_KINDS)


def block_from_dict(d: Any, where: str = "block") -> Block:
    """Read a block dict (as ``block.to_dict()`` writes it; schemes allowed for perms)."""
    kind = d.get("kind") if isinstance(d, dict) else None
    bk = _KINDS.get(kind) if isinstance(kind, str) else None
    if bk is None:
        kind = d.get("kind") if isinstance(d, dict) else d
        raise SpecError(f"{where}: unknown block kind {show(kind)}; "
                        f"accepted: {', '.join(_KINDS)}")
    check_keys(d, bk.accepted, where, bk.required)
    return bk.parse(d, where)


def unstride(d: dict) -> dict:
    """A block dict made not to downsample (every stride 1), in place."""
    _KINDS[d["kind"]].unstride(d)
    return d


def unstrided(block: Block) -> Block:
    """``block`` with every stride 1: the first block of the second stage in the CIFAR form
    (:meth:`~igcv_nas.arch.spec.NetworkSpec.with_target` with ``cifar=True``)."""
    return block_from_dict(unstride(block.to_dict()))


# ---------------------------------------------------------------------------------------------
# igc: IGCV1 / IGCV2 chain

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


def igc_groups(c_in: int, c_out: int, k: int) -> int:
    """Groups of a 1x1 group conv c_in -> c_out with about ``k`` input channels per group: the
    most groups dividing both widths that leave >= k input channels per group (1 if none)."""
    g = math.gcd(c_in, c_out)
    return max((d for d in range(1, g + 1) if g % d == 0 and c_in // d >= k), default=1)


def igc_chain(c_in: int, c_out: int, stride: int, k: int = 8, kernel: int = 3,
              require: str = "relaxed", n_pw: int | None = None, residual: bool = False) -> dict:
    """IGCV2 block: channel-wise kxk (K_1 = 1), then ``n_pw`` 1x1 group convs with about ``k``
    input channels per group (:func:`igc_groups`) and an interleave (channel shuffle by the
    previous conv's groups) between them. Default ``n_pw = ceil(log_k c_in)``, i.e. the paper's
    L = ceil(log_k C) + 1. ``residual`` applies where stride is 1 and c_in == c_out."""
    if n_pw is None:
        n_pw = max(1, math.ceil(math.log(c_in, k) - 1e-9))
    layers: list[dict[str, Any]] = [{"out_chs": c_in, "kernel": kernel, "stride": stride,
                                     "groups": c_in, "perm": None, "act": False}]
    c = c_in
    for i in range(n_pw):
        g = igc_groups(c, c_out, k)
        last = i == n_pw - 1
        layers.append({"out_chs": c_out, "kernel": 1, "stride": 1, "groups": g,
                       "perm": None if last or g == 1 else {"scheme": "interleave", "groups": g},
                       "act": last})
        c = c_out
    return {"kind": "igc", "in_chs": c_in, "require": require, "layers": layers,
            "residual": bool(residual and stride == 1 and c_in == c_out)}


_LAYER_KEYS = {"out_chs", "kernel", "stride", "groups", "perm", "act"}


def _igc_parse(d: dict, where: str) -> IGCBlock:
    cin = read_int(d, "in_chs", where)
    raw = d["layers"]
    if not isinstance(raw, list) or not raw:
        raise SpecError(f"{where}: layers must be a non-empty list")
    if len(raw) > MAX_IGC_LAYERS:
        raise SpecError(f"{where}: {len(raw):,} layers; accepted: at most {MAX_IGC_LAYERS} "
                        "convs in an igc chain")
    c, parsed = cin, []
    for li, ld in enumerate(raw):
        lw = f"{where}.layer{li}"
        check_keys(ld, _LAYER_KEYS, lw, ("out_chs", "groups"))
        out = read_int(ld, "out_chs", lw)
        runs = make_runs(ld["groups"], c, out, lw)
        parsed.append((ld, out, runs))
        c = out
    layers: list[IGCLayer] = []
    for li, (ld, out, runs) in enumerate(parsed):
        lw = f"{where}.layer{li}"
        nxt = parsed[li + 1][2] if li + 1 < len(parsed) else None
        layers.append(IGCLayer(out, read_int(ld, "kernel", lw, 1), read_int(ld, "stride", lw, 1),
                               runs, resolve_perm(ld.get("perm"), out, runs, nxt, lw + ".perm"),
                               bool(ld.get("act", li == len(parsed) - 1))))
    return IGCBlock(cin, tuple(layers), bool(d.get("residual", False)), read_require(d, where))


_MAX_IGC_1X1 = 8  # an igc chain that is not dense after this many 1x1 convs is rejected
_IGC_MIN: dict[tuple[int, int, int], int] = {}


def igc_min_layers(c_in: int, c_out: int, k: int) -> int:
    """Fewest 1x1 group convs after the channel-wise conv that make an igc chain dense (what a
    space's ``L: min`` means)."""
    from .validation import complementary  # validation reads blocks; this runs after both load

    key = (c_in, c_out, k)
    if key not in _IGC_MIN:
        # necessary: an output reaches at most prod(input channels per group) inputs
        start, reach, c = 1, 1, c_in
        while start < _MAX_IGC_1X1:
            reach *= c // igc_groups(c, c_out, k)
            if reach >= c_in:
                break
            start, c = start + 1, c_out
        for n in range(start, _MAX_IGC_1X1 + 1):
            b = block_from_dict(igc_chain(c_in, c_out, 1, k, 3, "none", n, False))
            if complementary(b.ops)[0] != "violated":
                break
        else:
            raise SpecError(f"igc chain {c_in}->{c_out} with K={k} is not dense after "
                            f"{_MAX_IGC_1X1} 1x1 group convs")
        _IGC_MIN[key] = n
    return _IGC_MIN[key]


def _igc_n_pw(l_choice: Any, c_in: int, c_out: int, k: int) -> int:
    if isinstance(l_choice, int) and not isinstance(l_choice, bool):
        return l_choice - 1
    extra = int(l_choice[4:]) if len(l_choice) > 3 else 0
    return igc_min_layers(c_in, c_out, k) + extra


def _igc_space(c_in: int, c_out: int, stride: int, ch: dict, require: str,
               perms: bool = True) -> dict:
    d = igc_chain(c_in, c_out, stride, ch["K"], ch["kernel"], require,
                  _igc_n_pw(ch["L"], c_in, c_out, ch["K"]), ch["residual"])
    if not perms:
        for layer in d["layers"]:
            layer["perm"] = None
    return d


def _igc_unstride(d: dict) -> None:
    for layer in d["layers"]:
        layer["stride"] = 1


def _igc_check(b: IGCBlock, label: str) -> list[tuple[str, str]]:
    out, ops = [], b.ops
    if len(ops) < 2:
        out.append((label, f"an igc block needs L >= 2 group convs, has {len(ops)}"))
    for li, op in enumerate(ops[1:], start=1):
        if op.kernel != 1 or op.stride != 1:
            out.append((f"{label}.layer{li}", f"kernel={op.kernel} stride={op.stride}: only the "
                                              "first layer of an igc chain may be spatial or "
                                              "strided"))
    if b.residual and (b.stride != 1 or b.in_chs != b.out_chs):
        out.append((label, f"residual needs stride 1 and in_chs == out_chs "
                           f"(stride {b.stride}, {b.in_chs}->{b.out_chs})"))
    return out


def igc_balance(block: IGCBlock) -> float | None:
    """IGCV2 balance: S*K_1 = K_2 = ... = K_L (K = input channels per group), even groups only."""
    ks = []
    for li, op in enumerate(block.ops):
        if len(op.groups) != 1:
            return None
        k = op.groups[0][1]
        ks.append(k * op.kernel * op.kernel if li == 0 else k)
    return max(ks) / min(ks)


register_block_kind(BlockKind(
    "igc", IGCBlock, keys=("in_chs", "residual", "require", "layers"),
    optional=("residual", "require"), parse=_igc_parse,
    space_keys=("kernel", "K", "L", "residual"), space_dict=_igc_space, unstride=_igc_unstride,
    check=_igc_check, balance=igc_balance))


# ---------------------------------------------------------------------------------------------
# igcv3: interleaved low-rank group bottleneck

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


def igcv3_block(c_in: int, c_out: int, stride: int, t: int, g1: int = 2, g2: int = 2,
                kernel: int = 3, require: str = "relaxed") -> dict:
    """One IGCV3 block dict: group expansion (g1), complement deal, depthwise, group projection
    (g2), interleave back so the next block's expansion groups see both projection groups."""
    e = c_in * t
    return {"kind": "igcv3", "in_chs": c_in, "out_chs": c_out, "stride": stride, "expand_chs": e,
            "kernel": kernel, "expand_groups": g1, "project_groups": g2,
            "perm_expand": {"scheme": "complement"},
            "perm_project": {"scheme": "interleave", "groups": g2} if g2 > 1 else None,
            "require": require}


def _igcv3_parse(d: dict, where: str) -> IGCV3Block:
    cin = read_int(d, "in_chs", where)
    cout, s = read_int(d, "out_chs", where), read_int(d, "stride", where)
    k = read_int(d, "kernel", where, 3)
    e = read_int(d, "expand_chs", where, cin)
    eg = make_runs(d["expand_groups"], cin, e, where + ".expand_groups")
    pg = make_runs(d["project_groups"], e, cout, where + ".project_groups")
    # the depthwise conv between expansion and projection does not mix channels, so
    # 'complement' for perm_expand deals expansion groups over projection groups
    return IGCV3Block(cin, cout, s, e, k, eg, pg,
                      resolve_perm(d.get("perm_expand"), e, eg, pg, where + ".perm_expand"),
                      resolve_perm(d.get("perm_project"), cout, pg, None, where + ".perm_project"),
                      read_require(d, where))


def _igcv3_space(c_in: int, c_out: int, stride: int, ch: dict, require: str,
                 perms: bool = True) -> dict:
    e = c_in * ch["expand"]
    eg, pg = group_arg(ch["g1"], c_in, e), group_arg(ch["g2"], e, c_out)
    p_proj: dict | list | None
    if not perms or pg == 1:
        p_proj = None
    elif isinstance(pg, int):
        p_proj = {"scheme": "interleave", "groups": pg}
    else:  # uneven: deal the projection groups proportionally (= interleave for even groups)
        p_proj = list(_perm.complement(_perm.expand_runs(pg, 2), [c_out]))
    return {"kind": "igcv3", "in_chs": c_in, "out_chs": c_out, "stride": stride, "expand_chs": e,
            "kernel": ch["kernel"], "expand_groups": eg, "project_groups": pg,
            "perm_expand": {"scheme": "complement"} if perms else None,
            "perm_project": p_proj, "require": require}


register_block_kind(BlockKind(
    "igcv3", IGCV3Block,
    keys=("in_chs", "out_chs", "stride", "expand_chs", "kernel", "expand_groups",
          "project_groups", "perm_expand", "perm_project", "require"),
    optional=("expand_chs", "kernel", "perm_expand", "perm_project", "require"),
    parse=_igcv3_parse, space_keys=("expand", "kernel", "g1", "g2"), space_dict=_igcv3_space))


# ---------------------------------------------------------------------------------------------
# mbconv: MobileNetV2 inverted residual

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


def mbconv_block(c_in: int, c_out: int, stride: int, t: int, kernel: int = 3) -> dict:
    """One MobileNetV2 block dict: expansion ``t`` (``expand_chs = c_in * t``)."""
    return {"kind": "mbconv", "in_chs": c_in, "out_chs": c_out, "stride": stride,
            "expand_chs": c_in * t, "kernel": kernel}


def _mbconv_parse(d: dict, where: str) -> MBConvBlock:
    cin = read_int(d, "in_chs", where)
    cout, s = read_int(d, "out_chs", where), read_int(d, "stride", where)
    k = read_int(d, "kernel", where, 3)
    return MBConvBlock(cin, cout, s, read_int(d, "expand_chs", where, cin), k)


def _mbconv_space(c_in: int, c_out: int, stride: int, ch: dict, require: str,
                  perms: bool = True) -> dict:
    return mbconv_block(c_in, c_out, stride, ch["expand"], ch["kernel"])


register_block_kind(BlockKind(
    "mbconv", MBConvBlock, keys=("in_chs", "out_chs", "stride", "expand_chs", "kernel"),
    optional=("expand_chs", "kernel"), parse=_mbconv_parse, space_keys=("expand", "kernel"),
    space_dict=_mbconv_space))


# ---------------------------------------------------------------------------------------------
# dwsep: MobileNetV1 depthwise-separable conv

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


def dwsep_block(c_in: int, c_out: int, stride: int, kernel: int = 3) -> dict:
    """One MobileNetV1 block dict."""
    return {"kind": "dwsep", "in_chs": c_in, "out_chs": c_out, "stride": stride, "kernel": kernel}


def _dwsep_parse(d: dict, where: str) -> DWSepBlock:
    cin = read_int(d, "in_chs", where)
    cout, s = read_int(d, "out_chs", where), read_int(d, "stride", where)
    return DWSepBlock(cin, cout, s, read_int(d, "kernel", where, 3))


def _dwsep_space(c_in: int, c_out: int, stride: int, ch: dict, require: str,
                 perms: bool = True) -> dict:
    return dwsep_block(c_in, c_out, stride, ch["kernel"])


register_block_kind(BlockKind(
    "dwsep", DWSepBlock, keys=("in_chs", "out_chs", "stride", "kernel"), optional=("kernel",),
    parse=_dwsep_parse, space_keys=("kernel",), space_dict=_dwsep_space))


Block = Union[IGCBlock, IGCV3Block, MBConvBlock, DWSepBlock]
BLOCK_KINDS = ("igc", "igcv3", "mbconv", "dwsep")  # the built-in kinds; all: block_kinds()
_BUILTIN.update(BLOCK_KINDS)
assert block_kinds() == BLOCK_KINDS
