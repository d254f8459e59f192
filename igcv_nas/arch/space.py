"""Search spaces: YAML files of per-stage choices, sampled define-by-run from an Optuna trial.

``load_space("igcv3")`` reads ``search_spaces/igcv3.yaml`` (or any path) into a
:class:`SearchSpace`; ``space.sample(trial)`` asks the trial for every choice with a stable label
and returns a frozen :class:`~igcv_nas.arch.spec.NetworkSpec`. Works with
``optuna.trial.FixedTrial`` and with real study trials; only ``trial.suggest_categorical(label,
choices)`` is used, and the choices of one label are the same in every trial (Optuna requires it).

File format (``format: igcv-nas/space@1``)::

    name: igcv3                    # optional, defaults to the file name
    complementary: relaxed         # exact | relaxed: the mode every sampled block reaches
    target: {input_size: 224, num_classes: 1000}   # where budgets are counted (default)
    act: relu6                     # relu | relu6 | hswish | silu
    dropout: 0.2
    stem: {out_chs: 32, kernel: 3, stride: 2}
    head_chs: 1280                 # 0 = no head conv
    block:                         # defaults for every block; a stage may override any key
      kind: igcv3                  # igcv3 | mbconv | dwsep | igc, or a list of them
      expand: [3, 6]               # igcv3, mbconv: expand_chs = in_chs * expand
      kernel: [3, 5]               # depthwise (igcv3, mbconv, dwsep) / first conv (igc) kernel
      g1: [1, 2, 4]                # igcv3: expansion groups; an int G = G even groups,
      g2: [2, [1, 3]]              #   a list [a, b, ...] = uneven groups in ratio a:b:...
      K: [8, 16]                   # igc: channels per group of the 1x1 group convs
      L: [min, min+1]              # igc: convs in the chain; min = fewest that make it dense
      residual: true               # igc: identity shortcut where stride 1 and in == out
    stages:                        # width and depth are choices; stride is fixed
      - {width: 16, depth: 1, stride: 1, expand: 1}
      - {width: [16, 24, 32], depth: [2, 3, 4], stride: 2}

Every value except ``stride`` and the top-level scalars is a choice list; a scalar is one fixed
choice. A key with one choice is a constant and is not asked of the trial. Defaults: kernel 3,
expand 6, g1 2, g2 2, K 8, L min, residual false; ``kind`` is required.

Labels: ``s<i>.depth``, ``s<i>.width`` and ``s<i>.b<j>.<key>`` (``kind``, ``expand``, ``kernel``,
``g1``, ``g2``, ``K``, ``L``, ``residual``), with ``<i>``/``<j>`` the stage/block indices of the
sampled spec (so ``s2.b0`` in the trial is block ``s2.b0`` in the spec). A block asks only for
the keys of its kind. Trial values are the YAML values, except that a ratio ``[1, 3]`` is the
string ``"1:3"``.

Blocks: ``igcv3`` = 1x1 group expansion (g1), complement permutation, kxk depthwise, 1x1 group
projection (g2), proportional interleave of the projection groups (the channel shuffle for even
groups), as :func:`igcv_nas.arch.zoo.igcv3_block`. ``igc`` = IGCV2 chain: channel-wise kxk (K_1 = 1,
carries the stride), then L - 1 1x1 group convs whose group count is the largest divisor of
gcd(in, out) leaving >= K input channels per group, with a channel shuffle by the previous
conv's groups between them (as :func:`igcv_nas.arch.zoo.igc_chain` for power-of-two widths).

Valid by construction: at load time every local combination a sample can contain -- each
block kind with each in/out width pair it can see (previous stage's widths for the first block
of a stage), each expansion, group and K/L choice -- is built and its conv chain is checked with
:func:`igcv_nas.arch.validation.complementary`; strides are checked against the resolution at the
target (and in the CIFAR form when it is first asked for). A file with any invalid combination
is rejected with a one-line :class:`SpaceError` naming it, so :meth:`SearchSpace.sample` never
rejects or resamples.

Files: a bare name resolves to ``search_spaces/<name>.yaml`` at the repository root (source
checkouts, editable installs), else to ``igcv_nas/spaces/<name>.yaml`` inside the installed
package (a wheel ships ``search_spaces/`` there as the data package ``igcv_nas.spaces``).
:attr:`SearchSpace.sha256` is the SHA-256 of the file's bytes.

MACs bounds are exact: block choices are independent, so the cheapest (dearest) network is found
by dynamic programming over stages with the previous stage's width as state, each stage taking
the best depth and, per block, the best local choice at its (in, out, stride, resolution);
:meth:`SearchSpace.extreme_params` returns the parameters that attain them.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from ..errors import IGCVError, InputError
from .blocks import SpaceKey, block_kind, block_kinds, igc_min_layers, ratio as _ratio
from .cost import block_cost, classifier_cost, ops_cost, out_res
from .spec import (ACTS, Block, NetworkSpec, SpecError, Stem, block_from_dict, head_conv,
                   stem_conv, unstrided)
from ..units import (MAX_BLOCKS, MAX_CHANNELS, MAX_CLASSES, MAX_IGC_LAYERS, MAX_INPUT_SIZE,
                     MAX_KERNEL, MAX_NESTING, MAX_SPACE_BYTES, MAX_SPACE_CHECKS,
                     MAX_SPACE_COMBINATIONS, MAX_STAGES, MAX_STRIDE, MAX_YAML_NODES, read_bounded,
                     show)
from .validation import CheckTooLarge, complementary

__all__ = ["FORMAT", "SearchSpace", "SpaceError", "StageSpace", "Target", "available_spaces",
           "block_dict", "igc_min_layers", "load_space", "to_cifar"]

FORMAT = "igcv-nas/space@1"
MODES = ("exact", "relaxed")
SPACE_DIR = Path(__file__).resolve().parents[2] / "search_spaces"  # source checkout

# the block keys the shipped kinds use; which of them a kind asks (and any key it adds) is in
# its registry record (igcv_nas.arch.blocks.BlockKind.space_keys, .new_space_keys)
BLOCK_KEYS = ("kind", "expand", "kernel", "g1", "g2", "K", "L", "residual")
DEFAULTS: dict[str, tuple] = {"expand": (6,), "kernel": (3,), "g1": (2,), "g2": (2,), "K": (8,),
                              "L": ("min",), "residual": (False,)}
_TOP_KEYS = ("format", "name", "description", "complementary", "target", "act", "dropout",
             "stem", "head_chs", "block", "stages")
# keys whose choice does not change a block's connectivity: verified at one value (_verify)
_VERIFY_FREE = ("kernel", "residual")
_L_RE = re.compile(r"^min(\+[1-9][0-9]{0,3})?$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")  # a space's name names run directories


class SpaceError(IGCVError, ValueError):
    """A search-space file that cannot be used (malformed, unknown key or value, invalid choice)."""


@dataclass(frozen=True)
class Target:
    """Input resolution and classes at which a space's budgets are counted."""
    input_size: int = 224
    num_classes: int = 1000


@dataclass(frozen=True)
class StageSpace:
    index: int
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    stride: int
    choices: dict  # block key -> tuple of choices (trial values); only keys its kinds use


# ---------------------------------------------------------------------------------------------
# value checkers: YAML value -> trial value, or None when not accepted

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _pos_int(v: Any) -> Any:
    return v if _is_int(v) and v >= 1 else None


def _bounded(hi: int):
    def check(v: Any) -> Any:
        return v if _is_int(v) and 1 <= v <= hi else None
    return check


def _kind(v: Any) -> Any:
    return v if isinstance(v, str) and v in block_kinds() else None


def _kernel(v: Any) -> Any:
    return v if _is_int(v) and 1 <= v <= MAX_KERNEL and v % 2 == 1 else None


def _groups(v: Any) -> Any:
    if _is_int(v):
        return v if 1 <= v <= MAX_CHANNELS else None
    if (isinstance(v, list) and 2 <= len(v) <= MAX_CHANNELS
            and all(_is_int(x) and 1 <= x <= MAX_CHANNELS for x in v)):
        return ":".join(str(x) for x in v)
    return None


def _k(v: Any) -> Any:
    return v if _is_int(v) and 2 <= v <= MAX_CHANNELS else None


def _l(v: Any) -> Any:
    if _is_int(v):
        return v if 2 <= v <= MAX_IGC_LAYERS else None
    if isinstance(v, str) and _L_RE.match(v) and (len(v) == 3 or int(v[4:]) <= MAX_IGC_LAYERS):
        return v
    return None


def _bool(v: Any) -> Any:
    return v if isinstance(v, bool) else None


_GROUPS = (f"an integer >= 1 (even groups) or a ratio list like [1, 3] (values up to "
           f"{MAX_CHANNELS:,})")
_CHECKERS = {  # "kind": the registered kinds, see _checker
    "expand": (_bounded(MAX_CHANNELS), f"an integer >= 1 and <= {MAX_CHANNELS:,}"),
    "kernel": (_kernel, f"an odd integer >= 1 and <= {MAX_KERNEL}"),
    "g1": (_groups, _GROUPS),
    "g2": (_groups, _GROUPS),
    "K": (_k, f"an integer >= 2 and <= {MAX_CHANNELS:,}"),
    "L": (_l, f"an integer >= 2, 'min' or 'min+N', at most {MAX_IGC_LAYERS}"),
    "residual": (_bool, "true | false"),
    "width": (_bounded(MAX_CHANNELS), f"an integer >= 1 and <= {MAX_CHANNELS:,} (channels)"),
    "depth": (_bounded(MAX_BLOCKS), f"an integer >= 1 and <= {MAX_BLOCKS:,} (blocks)"),
}


def _kind_keys(kind: str) -> tuple[str, ...]:
    """The space keys a block of ``kind`` asks, in order."""
    return block_kind(kind).space_keys


def _new_keys() -> dict[str, SpaceKey]:
    """Block keys registered kinds add to :data:`BLOCK_KEYS`, in registration order."""
    out: dict[str, SpaceKey] = {}
    for name in block_kinds():
        for k, spec in block_kind(name).new_space_keys.items():
            if k not in BLOCK_KEYS:
                out.setdefault(k, spec)
    return out


def _block_keys() -> tuple[str, ...]:
    return BLOCK_KEYS + tuple(_new_keys())


def _checker(key: str) -> tuple[Callable[[Any], Any], str]:
    if key == "kind":
        return _kind, " | ".join(block_kinds())
    if key in _CHECKERS:
        return _CHECKERS[key]
    spec = _new_keys()[key]
    return spec.check, spec.accepted


def _defaults() -> dict[str, tuple]:
    return {**DEFAULTS, **{k: spec.default for k, spec in _new_keys().items()}}


# upper bounds of the integer keys read with SearchSpace._int
_INT_MAX = {"input_size": MAX_INPUT_SIZE, "num_classes": MAX_CLASSES, "out_chs": MAX_CHANNELS,
            "kernel": MAX_KERNEL, "stride": MAX_STRIDE, "head_chs": MAX_CHANNELS}


def _fmt(v: Any) -> str:
    """A choice as the YAML spelled it: ratios as lists, booleans in lower case."""
    if isinstance(v, str) and ":" in v:
        return str(list(_ratio(v) or ()))
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


# ---------------------------------------------------------------------------------------------
# blocks from choices

def block_dict(kind: str, c_in: int, c_out: int, stride: int, ch: dict, require: str,
               perms: bool = True) -> dict:
    """The spec dict of one block from its local choices ``ch`` (``perms=False``: without
    permutations, for counting MACs only): the kind's ``space_dict``
    (:class:`igcv_nas.arch.blocks.BlockKind`)."""
    return block_kind(kind).space_dict(c_in, c_out, stride, ch, require, perms)


# ---------------------------------------------------------------------------------------------
# CIFAR form

def to_cifar(spec: NetworkSpec, num_classes: int = 10, input_size: int = 32) -> NetworkSpec:
    """The CIFAR form of a spec: same blocks, stem stride 1, the second stage (index 1) not
    downsampling, ``input_size`` x ``input_size`` input, ``num_classes`` classes (the
    convention of :mod:`igcv_nas.arch.zoo`: ``to_cifar(zoo.igcv3_d()) == zoo.igcv3_d(cifar=True)``).
    An alias of the one target transform, ``spec.with_target(input_size, num_classes,
    cifar=True)`` (:meth:`~igcv_nas.arch.spec.NetworkSpec.with_target`)."""
    return spec.with_target(input_size, num_classes, cifar=True)


# ---------------------------------------------------------------------------------------------
# the space

class SearchSpace:
    """A loaded search-space file. Build with :func:`load_space`."""

    in_chs = 3  # input channels of every sample (RGB images): what the stem convolves

    def __init__(self, data: Any, source: str, raw: bytes, default_name: str = "space"):
        self.source = source
        self.raw = raw  # the file's bytes (a run directory keeps a copy)
        self.sha256 = hashlib.sha256(raw).hexdigest()
        self._where = source
        self._parse(data, default_name)
        self._blocks: dict[tuple, Block] = {}
        self._macs: dict[tuple, tuple[int, int]] = {}  # block key -> (MACs, params)
        self._ranges: dict[tuple, tuple] = {}
        self._verify()

    # -- reading ------------------------------------------------------------------------------

    def _err(self, msg: str) -> SpaceError:
        return SpaceError(f"{self._where}: {msg}")

    def _choices(self, key: str, value: Any, where: str) -> tuple:
        vals = value if isinstance(value, list) else [value]
        check, accepted = _checker(key)
        if not vals:
            raise self._err(f"{where}.{key}=[] has no choices; give at least one ({accepted})")
        out, seen = [], set()
        for v in vals:
            n = check(v)
            if n is None:
                raise self._err(f"{where}.{key}={show(v)} is not accepted; expected {accepted}")
            if (type(n), n) in seen:
                raise self._err(f"{where}.{key}: choice {show(v)} is listed twice")
            seen.add((type(n), n))
            out.append(n)
        return tuple(out)

    def _keys(self, d: Any, allowed: tuple[str, ...], where: str) -> dict:
        if not isinstance(d, dict):
            raise self._err(f"{where}: expected a mapping, got {type(d).__name__} {show(d)}")
        for k in d:
            if k not in allowed:
                raise self._err(f"{where}: unknown key {show(k)}; accepted: {', '.join(allowed)}")
        return d

    def _int(self, d: dict, key: str, where: str, default: int | None, lo: int = 1) -> int:
        v = d.get(key, default)
        if v is None:
            raise self._err(f"{where}: missing key {key!r}")
        hi = _INT_MAX[key]
        if not _is_int(v) or not lo <= v <= hi:
            at = f"{where}.{key}" if where else key
            raise self._err(f"{at}={show(v)} is not accepted; expected an integer >= {lo} "
                            f"and <= {hi:,}")
        return v

    def _parse(self, data: Any, default_name: str) -> None:
        top = self._keys(data, _TOP_KEYS, "top level")
        fmt = top.get("format", FORMAT)
        if fmt != FORMAT:
            raise self._err(f"format={show(fmt)} is not accepted; expected {FORMAT!r}")
        name = top.get("name", default_name)
        if not isinstance(name, str) or not name or ("name" in top and not _NAME_RE.match(name)):
            raise self._err(f"name={show(name)} is not accepted; expected a non-empty string of "
                            "at most 64 letters, digits and . _ + - (it names run directories)")
        self.name = name
        self.description = str(top.get("description", ""))
        mode = top.get("complementary")
        if mode is None:
            raise self._err("missing key 'complementary'; accepted: exact | relaxed")
        if mode not in MODES:
            raise self._err(f"complementary={show(mode)} is not accepted; expected exact | relaxed")
        self.complementary = mode
        t = self._keys(top.get("target", {}), ("input_size", "num_classes"), "target")
        self.target = Target(self._int(t, "input_size", "target", 224),
                             self._int(t, "num_classes", "target", 1000))
        self.act = top.get("act", "relu6")
        if self.act not in ACTS:
            raise self._err(f"act={show(self.act)} is not accepted; expected {' | '.join(ACTS)}")
        dr = top.get("dropout", 0.2)
        if not isinstance(dr, (int, float)) or isinstance(dr, bool) or not 0 <= dr < 1:
            raise self._err(f"dropout={show(dr)} is not accepted; expected a number in [0, 1)")
        self.dropout = float(dr)
        st = self._keys(top.get("stem"), ("out_chs", "kernel", "stride"), "stem")
        self.stem = Stem(self._int(st, "out_chs", "stem", None), self._int(st, "kernel", "stem", 3),
                         self._int(st, "stride", "stem", 2))
        if self.stem.kernel % 2 == 0:
            raise self._err(f"stem.kernel={self.stem.kernel} is not accepted; "
                            "expected an odd integer")
        self.head_chs = self._int(top, "head_chs", "", 1280, lo=0)
        block_keys = _block_keys()
        base = self._keys(top.get("block", {}), block_keys, "block")
        base_ch = {k: self._choices(k, v, "block") for k, v in base.items()}
        raw_stages = top.get("stages")
        if not isinstance(raw_stages, list) or not raw_stages:
            raise self._err(f"stages={show(raw_stages)} is not accepted; expected a non-empty list "
                            "of mappings with width, depth, stride")
        if len(raw_stages) > MAX_STAGES:
            raise self._err(f"stages: {len(raw_stages):,} stages; accepted: at most {MAX_STAGES}")
        stages, used = [], set()
        for i, rs in enumerate(raw_stages):
            where = f"stages[{i}]"
            rs = self._keys(rs, ("width", "depth", "stride") + block_keys, where)
            for k in ("width", "depth"):
                if k not in rs:
                    raise self._err(f"{where}: missing key {k!r}")
            widths = self._choices("width", rs["width"], where)
            depths = self._choices("depth", rs["depth"], where)
            stride = self._int(rs, "stride", where, 1)
            own = {k: self._choices(k, v, where) for k, v in rs.items() if k in block_keys}
            merged = {**_defaults(), **base_ch, **own}
            if "kind" not in merged:
                raise self._err(f"{where}: missing key 'kind' "
                                "(set it under block: or in the stage)")
            kinds = merged["kind"]
            need = {k for kind in kinds for k in _kind_keys(kind)}
            for k in own:
                if k != "kind" and k not in need:
                    raise self._err(f"{where}.{k}: not used by kind {_fmt(list(kinds))}; "
                                    f"keys of these kinds: {', '.join(sorted(need))}")
            used |= need
            choices = {"kind": kinds, **{k: merged[k] for k in block_keys if k in need}}
            stages.append(StageSpace(i, widths, depths, stride, choices))
        for k in base_ch:
            if k != "kind" and k not in used:
                raise self._err(f"block.{k}: not used by any stage's kinds")
        deepest = sum(max(st.depths) for st in stages)
        if deepest > MAX_BLOCKS:
            raise self._err(f"the deepest sample has {deepest:,} blocks (the largest depth of "
                            f"every stage); accepted: at most {MAX_BLOCKS:,}")
        self.stages = tuple(stages)
        self._count_combinations()

    def _count_combinations(self) -> None:
        """Refuse, before any block is built, a space whose load-time verification or exact MACs
        bounds would be too much work: the number of local block combinations (each checked
        once, so the cost is their sum over stages, never the product over blocks) is bounded
        by MAX_SPACE_CHECKS, the same counted with kernels by MAX_SPACE_COMBINATIONS."""
        checks = combos = 0
        for st in self.stages:
            pairs = len(st.widths) * len(self._in_widths(st.index))
            if max(st.depths) > 1:
                pairs += len(st.widths)
            for kind in st.choices["kind"]:
                keys = _kind_keys(kind)
                local = math.prod(len(st.choices[k]) for k in keys if k not in _VERIFY_FREE)
                checks += pairs * local
                combos += pairs * local * math.prod(len(st.choices[k]) for k in keys
                                                    if k in _VERIFY_FREE)
        if checks > MAX_SPACE_CHECKS:
            raise self._err(f"{checks:,} local block combinations to verify (kind x in/out width x "
                            f"expand/groups/K/L choices, summed over stages); accepted: at most "
                            f"{MAX_SPACE_CHECKS:,}")
        if combos > MAX_SPACE_COMBINATIONS:
            raise self._err(f"{combos:,} local block choices with kernels to cost; accepted: at "
                            f"most {MAX_SPACE_COMBINATIONS:,}")

    # -- static verification ------------------------------------------------------------------

    def _combos(self, st: StageSpace, kind: str, skip: tuple[str, ...] = ()) -> Iterator[dict]:
        keys = [k for k in _kind_keys(kind) if k not in skip]
        for vals in itertools.product(*(st.choices[k] for k in keys)):
            yield dict(zip(keys, vals))

    def _in_widths(self, i: int) -> tuple[int, ...]:
        return (self.stem.out_chs,) if i == 0 else self.stages[i - 1].widths

    def _check_strides(self, cifar: bool) -> None:
        """Every stride divides its input resolution (at the target, or in the CIFAR form)."""
        res = 32 if cifar else self.target.input_size
        s = 1 if cifar else self.stem.stride
        form = " (CIFAR form)" if cifar else ""
        if res % s:
            raise self._err(f"stem.stride={s} does not divide the input resolution {res}{form}")
        res //= s
        for st in self.stages:
            s = 1 if cifar and st.index == 1 else st.stride
            if res % s:
                raise self._err(f"stages[{st.index}].stride={s} does not divide the resolution "
                                f"{res}{form}")
            res //= s

    def _verify(self) -> None:
        """Every block a sample can hold is buildable and meets ``complementary``; strides divide
        (the CIFAR form is checked when first asked for)."""
        self._check_strides(False)
        seen: set = set()
        for st in self.stages:
            pairs = [(c, w) for w in st.widths for c in self._in_widths(st.index)]
            if max(st.depths) > 1:
                pairs += [(w, w) for w in st.widths]
            for c_in, c_out in pairs:
                for kind in st.choices["kind"]:
                    for ch in self._combos(st, kind, skip=_VERIFY_FREE):
                        ch = {**ch, "kernel": 3, "residual": False}
                        key = (kind, c_in, c_out, tuple(sorted(ch.items())))
                        if key in seen:
                            continue
                        seen.add(key)
                        self._verify_block(st, kind, c_in, c_out, ch)

    def _verify_block(self, st: StageSpace, kind: str, c_in: int, c_out: int, ch: dict) -> None:
        keys = _kind_keys(kind)
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in ch.items() if k in keys
                          and k not in _VERIFY_FREE)
        what = f"stages[{st.index}]: {kind} block {c_in}->{c_out}"
        what += f" with {shown}" if shown else ""
        if "expand" in keys and c_in * ch["expand"] > MAX_CHANNELS:
            raise self._err(f"{what} cannot be built: expand_chs={c_in * ch['expand']:,} is out of "
                            f"range; accepted: at most {MAX_CHANNELS:,} channels")
        try:
            b = block_from_dict(block_dict(kind, c_in, c_out, 1, ch, self.complementary))
            mode, ex, _, hi = complementary(b.ops)
        except (SpecError, CheckTooLarge) as e:
            raise self._err(f"{what} cannot be built: {e}") from None
        if mode == "violated":
            assert ex is not None  # violated comes with its example
            raise self._err(f"{what} violates the complementary condition (output channel {ex[0]} "
                            f"has no path to input channel {ex[1]})")
        if mode == "relaxed" and self.complementary == "exact":
            raise self._err(f"{what} is only relaxed-complementary (up to {hi} paths per channel "
                            "pair) but the file requires complementary: exact")

    # -- sampling -----------------------------------------------------------------------------

    def _block(self, kind: str, c_in: int, c_out: int, stride: int, ch: dict) -> Block:
        key = (kind, c_in, c_out, stride, tuple(sorted(ch.items())))
        b = self._blocks.get(key)
        if b is None:
            b = self._blocks[key] = block_from_dict(
                block_dict(kind, c_in, c_out, stride, ch, self.complementary))
        return b

    @staticmethod
    def _pick(trial: Any, label: str, choices: tuple) -> Any:
        return choices[0] if len(choices) == 1 else trial.suggest_categorical(label, choices)

    def _pick_block(self, trial: Any, label: str, st: StageSpace) -> tuple[str, dict]:
        kind = self._pick(trial, f"{label}.kind", st.choices["kind"])
        return kind, {k: self._pick(trial, f"{label}.{k}", st.choices[k])
                      for k in _kind_keys(kind)}

    def sample(self, trial: Any, cifar: bool = False,
               num_classes: int | None = None) -> NetworkSpec:
        """The network ``trial`` picks (define-by-run; valid by construction).

        At :attr:`target` by default; ``cifar=True`` gives its CIFAR form (:func:`to_cifar`:
        32x32, stem stride 1, stage 1 not downsampling, ``num_classes`` default 10)."""
        stages, c = [], self.stem.out_chs
        for st in self.stages:
            d = self._pick(trial, f"s{st.index}.depth", st.depths)
            w = self._pick(trial, f"s{st.index}.width", st.widths)
            blocks = []
            for j in range(d):
                kind, ch = self._pick_block(trial, f"s{st.index}.b{j}", st)
                blocks.append(self._block(kind, c, w, st.stride if j == 0 else 1, ch))
                c = w
            stages.append(tuple(blocks))
        spec = NetworkSpec(input_size=self.target.input_size, num_classes=self.target.num_classes,
                           stem=self.stem, stages=tuple(stages), head_chs=self.head_chs,
                           dropout=self.dropout, act=self.act, in_chs=self.in_chs, name=self.name)
        if cifar:
            self._check_strides(True)
            return spec.with_target(32, num_classes or 10, cifar=True)
        return spec.with_target(num_classes=num_classes) if num_classes else spec

    def dimensions(self) -> dict[str, tuple]:
        """Every label a trial may be asked for, with its choices (in sampling order)."""
        out: dict[str, tuple] = {}
        keys = _block_keys()
        for st in self.stages:
            s = f"s{st.index}"
            for k, ch in (("depth", st.depths), ("width", st.widths)):
                if len(ch) > 1:
                    out[f"{s}.{k}"] = ch
            for j in range(max(st.depths)):
                for k in keys:
                    if k in st.choices and len(st.choices[k]) > 1:
                        out[f"{s}.b{j}.{k}"] = st.choices[k]
        return out

    def size(self) -> int:
        """Number of distinct parameter assignments (sampled points) in the space."""
        total = 1
        for st in self.stages:
            n = sum(math.prod(len(st.choices[k]) for k in _kind_keys(kind))
                    for kind in st.choices["kind"])
            total *= len(st.widths) * sum(n ** d for d in st.depths)
        return total

    # -- exact MACs bounds --------------------------------------------------------------------

    def _block_extremes(self, st: StageSpace, c_in: int, c_out: int, stride: int,
                        res: int, metric: int = 0) -> tuple[tuple[int, tuple], tuple[int, tuple]]:
        """((min, choices), (max, choices)) of one block's MACs (``metric`` 0) or params (1)
        over its local choices."""
        lo: tuple[int, tuple] | None = None
        hi: tuple[int, tuple] | None = None
        for kind in st.choices["kind"]:
            for ch in self._combos(st, kind):
                key = (kind, c_in, c_out, stride, res, tuple(sorted(ch.items())))
                m = self._macs.get(key)
                if m is None:
                    b = block_from_dict(block_dict(kind, c_in, c_out, stride, ch, "none", False))
                    c = block_cost(b, res)
                    self._macs[key] = m = (c[0], c[1])  # (MACs, params)
                v = m[metric]
                if lo is None or v < lo[0]:
                    lo = (v, (kind, ch))
                if hi is None or v > hi[0]:
                    hi = (v, (kind, ch))
        assert lo is not None and hi is not None  # a stage has at least one kind and combo
        return lo, hi

    def _block_params(self, st: StageSpace, j: int, pick: tuple) -> dict:
        kind, ch = pick
        label, out = f"s{st.index}.b{j}", {}
        if len(st.choices["kind"]) > 1:
            out[f"{label}.kind"] = kind
        for k, v in ch.items():
            if len(st.choices[k]) > 1:
                out[f"{label}.{k}"] = v
        return out

    def macs_range(self, cifar: bool = False, num_classes: int | None = None
                   ) -> tuple[tuple[int, dict], tuple[int, dict]]:
        """((min MACs, params), (max MACs, params)), exact, by dynamic programming over stages.

        MACs as :func:`igcv_nas.arch.cost.count` (conv + linear multiply-accumulates at batch 1);
        ``params`` attain them through ``optuna.trial.FixedTrial(params)``. At :attr:`target`, or
        the CIFAR form (32x32, ``num_classes`` default 10) with ``cifar=True``."""
        return self._range(cifar, num_classes, 0)

    def params_range(self, num_classes: int | None = None
                     ) -> tuple[tuple[int, dict], tuple[int, dict]]:
        """((min parameters, trial params), (max parameters, trial params)), exact, as
        :func:`igcv_nas.arch.cost.count` counts them (no resolution dependence; the classifier has
        ``num_classes`` outputs, default the target's)."""
        return self._range(False, num_classes, 1)

    def _range(self, cifar: bool, num_classes: int | None, metric: int
               ) -> tuple[tuple[int, dict], tuple[int, dict]]:
        classes = num_classes or (10 if cifar else self.target.num_classes)
        key = (cifar, classes, metric)
        if key in self._ranges:
            return self._ranges[key]
        if cifar:
            self._check_strides(True)
        res = 32 if cifar else self.target.input_size
        stem_op = stem_conv(self.in_chs, replace(self.stem, stride=1) if cifar else self.stem)
        cost = ops_cost((stem_op,), res)
        stem, r_out = cost[metric], cost[4]
        # state: width leaving the previous stage -> (MACs so far, params); one table per side
        tables: list[dict[int, tuple[int, dict]]] = [{self.stem.out_chs: (stem, {})},
                                                     {self.stem.out_chs: (stem, {})}]
        better = (int.__lt__, int.__gt__)
        res = r_out
        for st in self.stages:
            stride = 1 if cifar and st.index == 1 else st.stride
            r_out = out_res(res, stride)
            new: list[dict[int, tuple[int, dict]]] = [{}, {}]
            for w in st.widths:
                rest = self._block_extremes(st, w, w, 1, r_out, metric)
                for c in tables[0]:
                    first = self._block_extremes(st, c, w, stride, res, metric)
                    for d in st.depths:
                        for side in (0, 1):
                            m = tables[side][c][0] + first[side][0] + (d - 1) * rest[side][0]
                            if w in new[side] and not better[side](m, new[side][w][0]):
                                continue
                            p = dict(tables[side][c][1])
                            if len(st.depths) > 1:
                                p[f"s{st.index}.depth"] = d
                            if len(st.widths) > 1:
                                p[f"s{st.index}.width"] = w
                            p.update(self._block_params(st, 0, first[side][1]))
                            for j in range(1, d):
                                p.update(self._block_params(st, j, rest[side][1]))
                            new[side][w] = (m, p)
            tables, res = new, r_out
        out = []
        for side, pick in ((0, min), (1, max)):
            ends = []
            for w, (m, p) in tables[side].items():
                head_op = head_conv(w, self.head_chs)
                head = ops_cost((head_op,), res)[metric] if head_op is not None else 0
                cls = classifier_cost(w if head_op is None else head_op.out_chs, classes)[metric]
                ends.append((m + head + cls, p))
            out.append(pick(ends, key=lambda e: e[0]))
        self._ranges[key] = (out[0], out[1])
        return self._ranges[key]

    def min_macs(self) -> int:
        """Exact smallest MACs of any sample at :attr:`target`."""
        return self.macs_range()[0][0]

    def max_macs(self) -> int:
        """Exact largest MACs of any sample at :attr:`target`."""
        return self.macs_range()[1][0]

    def min_over_samples(self, block_value: Callable[[Block, int], float],
                         end_value: Callable[[int, int], float], input_size: int | None = None,
                         cifar: bool = False) -> float:
        """Exact smallest, over every sample, of ``sum(block_value(block, res))`` over its
        blocks (``res``: the block's input resolution) plus ``end_value(channels, res)`` of what
        leaves the last block (its channels and resolution). The samples are taken at input
        resolution ``input_size`` (default: :attr:`target`'s) or in the CIFAR form
        (``cifar=True``: 32x32 unless ``input_size`` says otherwise, stem stride 1, the first
        block of stage 1 not downsampling, as :func:`to_cifar` makes it). The blocks passed are
        the ones the samples hold (permutations included).

        Dynamic programming over stages as :meth:`macs_range` (the value of a sum is separable:
        each block's choices are independent given its in / out widths, stride and resolution);
        ``block_value`` is called once per distinct (block, resolution), ``end_value`` once per
        width of the last stage. Exact up to floating-point summation order."""
        if cifar:
            self._check_strides(True)
        res = input_size or (32 if cifar else self.target.input_size)
        res = out_res(res, 1 if cifar else self.stem.stride)
        memo: dict[tuple, float] = {}

        def best(st: StageSpace, c_in: int, c_out: int, stride: int, r: int,
                 cifar_first: bool) -> float:
            lo: float | None = None
            for kind in st.choices["kind"]:
                for ch in self._combos(st, kind):
                    b = self._block(kind, c_in, c_out, stride, ch)
                    if cifar_first:
                        b = unstrided(b)
                    key = (b, r)
                    v = memo.get(key)
                    if v is None:
                        v = memo[key] = block_value(b, r)
                    lo = v if lo is None or v < lo else lo
            assert lo is not None  # a stage has at least one kind and combo
            return lo

        table: dict[int, float] = {self.stem.out_chs: 0.0}  # width leaving the stage -> min
        for st in self.stages:
            cifar_first = cifar and st.index == 1
            r_out = out_res(res, 1 if cifar_first else st.stride)
            new: dict[int, float] = {}
            for w in st.widths:
                rest = best(st, w, w, 1, r_out, False) if max(st.depths) > 1 else 0.0
                for c, so_far in table.items():
                    first = so_far + best(st, c, w, st.stride, res, cifar_first)
                    for d in st.depths:
                        v = first + (d - 1) * rest
                        if w not in new or v < new[w]:
                            new[w] = v
            table, res = new, r_out
        return min(v + end_value(w, res) for w, v in table.items())

    def extreme_params(self, which: str = "min", cifar: bool = False) -> dict:
        """FixedTrial parameters of a cheapest (``"min"``) or dearest (``"max"``) sample."""
        if which not in ("min", "max"):
            raise InputError(f"which={which!r}; accepted: min, max")
        return dict(self.macs_range(cifar)[0 if which == "min" else 1][1])

    def __repr__(self) -> str:
        return (f"SearchSpace({self.name!r}, {len(self.stages)} stages, "
                f"complementary={self.complementary}, sha256={self.sha256[:12]})")


# ---------------------------------------------------------------------------------------------
# loading

_CACHE: dict[tuple[str, str], SearchSpace] = {}


def available_spaces() -> list[str]:
    """Names :func:`load_space` resolves: ``search_spaces/*.yaml`` or the installed copies."""
    names = {p.stem for p in SPACE_DIR.glob("*.yaml")} if SPACE_DIR.is_dir() else set()
    try:
        from importlib import resources
        d = resources.files("igcv_nas").joinpath("spaces")
        if d.is_dir():
            names |= {p.name[:-5] for p in d.iterdir() if p.name.endswith(".yaml")}
    except (ModuleNotFoundError, OSError):
        pass
    return sorted(names)


def _read(name_or_path: str | Path) -> tuple[bytes, str, str]:
    s = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in s or "\\" in s or s.endswith((".yaml", ".yml")):
        p = Path(s)
        return read_bounded(p, MAX_SPACE_BYTES, "search-space file", SpaceError), s, p.stem
    p = SPACE_DIR / f"{s}.yaml"
    if p.is_file():
        return p.read_bytes(), str(p), s
    from importlib import resources
    r = resources.files("igcv_nas").joinpath("spaces", f"{s}.yaml")
    if r.is_file():
        return r.read_bytes(), f"igcv_nas/spaces/{s}.yaml", s
    raise SpaceError(f"{s}: no such search space; accepted: {', '.join(available_spaces())} "
                     "or a path to a .yaml file")


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML was built with it


def _line(ev: Any) -> str:
    mark = getattr(ev, "start_mark", None)
    return f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""


def _prescan_yaml(text: str, source: str) -> None:
    """Refuse, from the event stream and before anything is composed, what would make composing
    unbounded: aliases (``*a``: a 3 KB file of nested aliases expands to gigabytes) and anchors
    (``&a``), nesting deeper than MAX_NESTING (the composer recurses), more than MAX_YAML_NODES
    nodes."""
    depth = nodes = 0
    for ev in yaml.parse(text, Loader=_Loader):
        if isinstance(ev, yaml.AliasEvent):
            raise SpaceError(f"{source}: YAML alias *{ev.anchor}{_line(ev)} is not accepted; "
                             "write the value out (aliases and anchors are refused)")
        if getattr(ev, "anchor", None) is not None:
            raise SpaceError(f"{source}: YAML anchor &{ev.anchor}{_line(ev)} is not accepted; "
                             "write the value out (aliases and anchors are refused)")
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            nodes += 1
            if depth > MAX_NESTING:
                raise SpaceError(f"{source}: YAML nested deeper than {MAX_NESTING} levels"
                                 f"{_line(ev)}; accepted: at most {MAX_NESTING}")
        elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(ev, yaml.ScalarEvent):
            nodes += 1
        if nodes > MAX_YAML_NODES:
            raise SpaceError(f"{source}: more than {MAX_YAML_NODES:,} YAML values{_line(ev)}; "
                             f"accepted: at most {MAX_YAML_NODES:,}")


def parse_yaml(raw: bytes, source: str) -> Any:
    """A search-space file's bytes to Python, bounded (see :func:`_prescan_yaml`); SpaceError
    (one line naming ``source``) on any problem."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpaceError(f"{source}: not UTF-8 text") from None
    try:
        _prescan_yaml(text, source)
        return yaml.load(text, Loader=_Loader)
    except SpaceError:
        raise
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise SpaceError(f"{source}: malformed YAML{at}: "
                         f"{getattr(e, 'problem', None) or e}".replace("\n", " ")) from None
    except (ValueError, OverflowError, TypeError, RecursionError) as e:
        # a value YAML's resolvers accept but cannot construct: 2001-13-45 as a date, an integer
        # of more digits than Python converts
        msg = " ".join(str(e).split())[:200]
        raise SpaceError(f"{source}: a YAML value cannot be read "
                         f"({type(e).__name__}: {msg})") from None


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Read and verify a search space.

    Every combination of local choices is built and checked with the exact complementary check
    when the file is loaded, so every sample of the returned space is valid. Loaded spaces are
    cached by source and content.

    Args:
        name_or_path: a bare name (``"igcv3"`` -> ``search_spaces/igcv3.yaml``, or the copy
            installed under ``igcv_nas/spaces/``; see :func:`available_spaces`) or a path to a
            YAML file.

    Returns:
        The verified :class:`SearchSpace`.

    Raises:
        SpaceError: on any problem, one line naming the file, key, value and what is
            accepted."""
    raw, source, stem = _read(name_or_path)
    key = (source, hashlib.sha256(raw).hexdigest())
    if key not in _CACHE:
        _CACHE[key] = SearchSpace(parse_yaml(raw, source), source, raw, stem)
    return _CACHE[key]
