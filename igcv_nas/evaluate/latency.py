"""Latency: measured on a device, and predicted from a per-block lookup table (issue #6).

Measurement (:func:`measure`, :func:`measure_modules`)
    A built model (or a spec, built here) in eval mode under ``torch.no_grad()``, one fixed
    random input of ``batch`` x C x H x W (optionally channels_last, model and input), ``warmup``
    untimed forward passes, then ``reps`` timed ones; the result is the median, the 90th
    percentile and the fastest pass in milliseconds. CPU: ``threads`` sets
    ``torch.set_num_threads`` for the duration and the previous count is restored afterwards;
    each pass is timed with ``time.perf_counter``; glibc is first told to keep freed memory for
    reuse (:func:`steady_allocator`: otherwise every pass at 224x224 page-faults thousands of
    times, a third of its time on a VM). CUDA: each pass is bracketed by two
    ``torch.cuda.Event(enable_timing=True)`` recorded on the current stream, the device is
    synchronised once after the warm-up and once after the timed passes, and
    ``start.elapsed_time(end)`` gives the GPU time of every pass. Several modules measured
    together are timed round-robin (one pass of each per round), so a change in machine speed
    during the measurement touches all of them alike.

Prediction (:class:`LUT`, :func:`build_lut`, :func:`predict`)
    A network is ``stem + blocks + head`` (head = the 1x1 head conv if any, global pool,
    dropout, classifier). Each piece is timed **as a whole module at its input resolution**, the
    granularity hardware-aware NAS uses: a block entry includes its permutations, its residual
    add and the interaction between its convolutions. The key of an entry
    (:func:`block_key`, :func:`stem_key`, :func:`head_key`) holds everything that changes the
    module's run time: block kind, activation, per conv (in, out, kernel, stride, group runs,
    activation, permutation kind: ``-`` none / ``shuffleG`` view-transpose / ``gather``), the
    residual flag, the input resolution, the batch size and the memory format. Two blocks with
    the same key run the same code on the same shapes, so one measurement serves both.

    The pieces of one network are measured together, round-robin. The sum of the entries can
    still differ from the whole network (per-call overheads, caches shared between
    neighbours), so a linear correction ``predicted = scale * sum + offset_ms`` is fitted on a
    few whole networks at LUT build time (``calibrate``, default 6, chosen to spread over the
    range of sums). Each calibration network is timed round-robin **with its own pieces**, so
    the ratio whole / sum is taken under the same conditions even when the machine's speed
    drifts between measurements (:func:`fit_correction`: the median ratio as a pure scale; a
    least-squares line when there are 8 or more points and it fits them better). Without
    calibration points the correction is the identity.

    ``statistic`` chooses what is predicted: the median pass (default) or the fastest pass
    (``min``), which on a shared machine is the steadier of the two (interference only ever
    adds time); measurements compared with a LUT's prediction use the LUT's statistic.

    The LUT file is JSON (``format: igcv-nas/latency-lut@1``): the measurement settings (device
    and its name, threads, batch, channels_last, warm-up, reps, statistic, torch version),
    ``entries`` (key -> median / p90 / fastest ms), ``calibration`` and ``correction``; it is
    written atomically (temporary file + ``os.replace``). A key missing from the LUT raises
    :class:`MissingKey` naming it, unless :func:`predict` is asked to measure it on the LUT's device
    (``measure_missing=True`` or a ``device`` argument), which adds it to the LUT.

Protocol and repeatability (issue #15)
    The timed passes are cut into ``rounds`` consecutive rounds (default 4; with round-robin
    measurement every module's round ``j`` covers the same span of time); :func:`summarize`
    reports each round's median, their minimum (``stable_ms``, statistic ``rounds``) and the
    repeatability figure ``spread = max / min - 1`` of the round medians beside every value.
    ``amp`` (fp16 / bf16) runs under ``torch.autocast`` and is part of the keys (fp32 keys are
    unchanged). Calibration networks are also probed: every piece's time inside the network
    (an unprobed copy, timed in the same round-robin, gives their whole-network figure).

Learned predictor
    ``predict(..., method="learned")`` uses :mod:`igcv_nas.evaluate.latency_model` (scikit-learn),
    fitted on the LUT's entries and calibration networks and saved with it (hyperparameters +
    check values; the rows are the file's own entries, so loading refits deterministically).

Nothing here runs at import time; torch is imported lazily by the measuring functions only
where it is needed, so reading a LUT and predicting from it needs no torch.
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Iterable

from ..arch.cost import out_res
from ..errors import IGCVError
from ..fileio import atomic_write
from ..arch.spec import Block, ConvOp, NetworkSpec

__all__ = ["AMP_DTYPES", "LUT", "LUT_FORMAT", "LatencyError", "METHODS", "Measurement",
           "MissingKey", "STATISTICS", "block_key", "build_lut", "device_name", "fit_correction",
           "head_key", "measure", "measure_module", "measure_modules", "min_latency_ms",
           "network_keys", "predict", "resolve_device", "steady_allocator", "stem_key",
           "summarize"]

LUT_FORMAT = "igcv-nas/latency-lut@1"
STATISTICS = ("median", "min", "rounds")
METHODS = ("lut", "learned")
# the entry field holding each statistic
_FIELD = {"median": "ms", "min": "min", "rounds": "stable"}


MAX_LUT_ENTRIES = 200_000  # far above any space's pieces (thousands); a bigger file is not ours


def _check_ms(x: Any, where: str, none_ok: bool = False) -> None:
    """A latency read from a file: a finite number >= 0 (ValueError naming ``where``)."""
    if x is None and none_ok:
        return
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0:
        raise ValueError(f"{where} is {x!r}; accepted: a finite number of milliseconds >= 0")


class LatencyError(IGCVError, ValueError):
    """Bad latency input (unknown device, unreadable LUT, incompatible settings); one line."""


class MissingKey(LatencyError, KeyError):
    """A LUT has no entry for a key that a prediction needs."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Measurement:
    """Summary of the timed passes of one module (ms). ``round_ms`` holds the median of each
    round (consecutive slices of the passes, see :func:`summarize`), ``stable_ms`` the fastest
    of them (the ``rounds`` statistic) and ``spread`` the repeatability figure
    ``max(round_ms) / min(round_ms) - 1`` (None with a single round). ``segments`` holds one
    Measurement per probed piece when the module was measured with probes (calibration)."""
    median_ms: float
    p90_ms: float
    reps: int
    mean_ms: float
    min_ms: float
    device: str
    threads: int | None
    batch: int
    channels_last: bool
    rounds: int = 1
    round_ms: tuple[float, ...] = ()
    stable_ms: float = 0.0
    spread: float | None = None
    amp: str | None = None
    segments: tuple[Measurement, ...] = ()

    def as_dict(self) -> dict:
        d = asdict(self)
        d["round_ms"] = list(self.round_ms)
        if not self.segments:
            d.pop("segments")
        return d

    def value(self, statistic: str = "median") -> float:
        """The ``statistic`` of the timed passes in ms: ``median`` (all passes), ``min`` (the
        fastest pass) or ``rounds`` (the fastest per-round median)."""
        if statistic == "min":
            return self.min_ms
        if statistic == "rounds":
            return self.stable_ms
        return self.median_ms


def summarize(times: list[float], rounds: int = 1) -> dict:
    """Statistics of the pass times ``times`` (ms, in the order they were taken).

    The passes are cut into ``min(rounds, len(times))`` consecutive rounds, round ``j`` holding
    passes ``[j*n//R, (j+1)*n//R)`` (sizes differ by at most one). Returned: ``median_ms``,
    ``p90_ms`` (linear interpolation), ``mean_ms``, ``min_ms`` of all passes; ``round_ms`` the
    median of each round; ``stable_ms`` = ``min(round_ms)`` (a slow spell only ever adds time, a
    single slow pass cannot move a round's median); ``spread`` = ``max(round_ms) /
    min(round_ms) - 1``, the repeatability figure (how far two rounds of the same measurement
    disagree; None with one round)."""
    n = len(times)
    if n == 0:
        raise LatencyError("no timed passes to summarise")
    r = max(1, min(int(rounds), n))
    per = [statistics.median(times[j * n // r:(j + 1) * n // r]) for j in range(r)]
    return {"median_ms": statistics.median(times), "p90_ms": _percentile(times, 0.9),
            "mean_ms": statistics.fmean(times), "min_ms": min(times), "rounds": r,
            "round_ms": tuple(per), "stable_ms": min(per),
            "spread": (max(per) / min(per) - 1) if r > 1 and min(per) > 0 else None}


# ---------------------------------------------------------------------------------------------
# measuring


def resolve_device(device: Any):
    """``torch.device`` for ``device`` (cpu, cuda, cuda:N); LatencyError when unusable here."""
    import torch
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise LatencyError(f"device {device!r} is not a torch device (e.g. cpu, cuda, cuda:0): "
                           f"{e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LatencyError(f"device {device!r}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise LatencyError(f"device {device!r}: only {torch.cuda.device_count()} "
                               "CUDA device(s)")
    elif dev.type != "cpu":
        raise LatencyError(f"device {device!r}: accepted: cpu, cuda, cuda:N")
    return dev


def device_name(device: Any = "cpu") -> str:
    """Human name of the device: the GPU's name, or the CPU model and its core count."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        import torch
        return torch.cuda.get_device_name(dev)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores)"


def _percentile(xs: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of a non-empty list."""
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _check_counts(threads, batch, warmup, reps) -> None:
    if threads is not None and (not isinstance(threads, int) or threads <= 0):
        raise LatencyError(f"threads={threads!r} must be a positive integer")
    if not isinstance(batch, int) or batch <= 0:
        raise LatencyError(f"batch={batch!r} must be a positive integer")
    if not isinstance(warmup, int) or warmup < 0:
        raise LatencyError(f"warmup={warmup!r} must be a non-negative integer")
    if not isinstance(reps, int) or reps <= 0:
        raise LatencyError(f"reps={reps!r} must be a positive integer")


_ALLOCATOR_STEADY = False


def steady_allocator() -> bool:
    """Make repeated forward passes reuse memory instead of page-faulting (glibc only).

    By default glibc returns large freed blocks to the kernel (``mmap`` above a threshold, heap
    trimming above another), so every pass of a network at 224x224 re-maps its activation
    buffers: thousands of page faults per pass, which on a VM cost as much as a third of the
    pass and vary from pass to pass. Here the mmap threshold is raised to its maximum (32 MiB)
    and automatic trimming is switched off for this process, as a long-running inference
    process settles into after warm-up. Returns whether it applied (once per process)."""
    global _ALLOCATOR_STEADY
    if _ALLOCATOR_STEADY:
        return True
    import ctypes
    import ctypes.util
    name = ctypes.util.find_library("c")
    if not name or platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL(name)
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        ok = libc.mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024) == 1
        ok = libc.mallopt(M_TRIM_THRESHOLD, 2 ** 30) == 1 and ok
    except (OSError, AttributeError):
        return False
    _ALLOCATOR_STEADY = ok
    return ok


AMP_DTYPES = ("fp16", "bf16")


def _check_amp(amp: str | None) -> None:
    if amp is not None and amp not in AMP_DTYPES:
        raise LatencyError(f"amp={amp!r}: accepted: {', '.join(AMP_DTYPES)} (or none: fp32)")


def _probe_hooks(module, points: list, stamp: Callable[[], None]) -> list:
    """Hooks that call ``stamp`` before ``points[0]`` runs and after each of ``points`` has run:
    ``len(points) + 1`` stamps per forward pass, whose differences are the time of each piece
    inside the whole network (in context, with its real neighbours)."""
    hooks = [points[0].register_forward_pre_hook(lambda *_: stamp())]
    hooks += [p.register_forward_hook(lambda *_: stamp()) for p in points]
    return hooks


def measure_modules(items: list[tuple[Any, tuple[int, ...]]], device: Any = "cpu",
                    threads: int | None = None, batch: int = 1, channels_last: bool = False,
                    warmup: int = 5, reps: int = 20, rounds: int = 4, amp: str | None = None,
                    probes: dict[int, list] | None = None) -> list[Measurement]:
    """Latency of each ``(module, input_shape)`` of ``items``, timed **round-robin**: ``warmup``
    untimed passes of every module, then ``reps`` rounds in each of which every module runs
    once and is timed. The samples of every module are so spread over the whole measurement:
    a machine whose speed drifts (frequency, neighbours on a VM) shifts all of them alike, and
    pieces measured together for a LUT see the same conditions as a whole network measured
    over the same span of time. The passes are summarised by :func:`summarize` in ``rounds``
    rounds (every module's round ``j`` covers the same span of time). ``amp`` (``fp16`` /
    ``bf16``) runs the passes under ``torch.autocast`` of the device. ``probes`` maps an item's
    index to submodules of it (in forward order) whose in-context times are returned as the
    Measurement's ``segments``. Modules are moved to ``device`` in eval mode (left there)."""
    import contextlib

    import torch
    _check_counts(threads, batch, warmup, reps)
    _check_amp(amp)
    if not isinstance(rounds, int) or rounds <= 0:
        raise LatencyError(f"rounds={rounds!r} must be a positive integer")
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    mf = torch.channels_last if channels_last else torch.contiguous_format
    runs = []
    for module, shape in items:
        module = module.to(dev).eval()
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        x = torch.randn(batch, *shape, device=dev)
        if x.dim() == 4:
            x = x.contiguous(memory_format=mf)
        runs.append((module, x))
    marks: dict[int, list] = {i: [] for i in (probes or {})}
    active = [False]

    def stamper(i: int) -> Callable[[], None]:
        def stamp() -> None:
            if not active[0]:
                return
            if cuda:
                ev = torch.cuda.Event(enable_timing=True)
                ev.record()
                marks[i].append(ev)
            else:
                marks[i].append(time.perf_counter())
        return stamp

    hooks = [h for i, pts in (probes or {}).items()
             for h in _probe_hooks(runs[i][0], pts, stamper(i))]
    autocast = ((lambda: torch.autocast(dev.type, dtype={"fp16": torch.float16,
                                                         "bf16": torch.bfloat16}[amp]))
                if amp else contextlib.nullcontext)
    prev = torch.get_num_threads()
    times: list[list[float]] = [[] for _ in runs]
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        with torch.no_grad(), autocast():
            if cuda:
                with torch.cuda.device(dev):
                    for module, x in runs:
                        for _ in range(warmup):
                            module(x)
                    torch.cuda.synchronize(dev)
                    events: list[list] = [[] for _ in runs]
                    active[0] = True
                    for _ in range(reps):
                        for i, (module, x) in enumerate(runs):
                            start = torch.cuda.Event(enable_timing=True)
                            end = torch.cuda.Event(enable_timing=True)
                            start.record()
                            module(x)
                            end.record()
                            events[i].append((start, end))
                    active[0] = False
                    torch.cuda.synchronize(dev)
                    times = [[s.elapsed_time(e) for s, e in ev] for ev in events]
            else:
                steady_allocator()
                for module, x in runs:
                    for _ in range(warmup):
                        module(x)
                clock = time.perf_counter
                active[0] = True
                for _ in range(reps):
                    for i, (module, x) in enumerate(runs):
                        t0 = clock()
                        module(x)
                        times[i].append((clock() - t0) * 1e3)
                active[0] = False
    finally:
        active[0] = False
        for h in hooks:
            h.remove()
        if threads is not None:
            torch.set_num_threads(prev)
    common = dict(device=str(dev), threads=threads if not cuda else None, batch=batch,
                  channels_last=channels_last, amp=amp)
    out = []
    for i, ts in enumerate(times):
        segs: tuple[Measurement, ...] = ()
        if i in marks:
            k = len(probes[i]) + 1  # stamps per pass
            m = marks[i]
            if len(m) != k * reps:
                raise LatencyError(f"probes of item {i}: {len(m)} stamps for {reps} passes of "
                                   f"{k}; a probed submodule did not run exactly once a pass")
            gap = ((lambda a, b: a.elapsed_time(b)) if cuda else (lambda a, b: (b - a) * 1e3))
            segs = tuple(Measurement(reps=reps, **summarize(
                [gap(m[p * k + j], m[p * k + j + 1]) for p in range(reps)], rounds), **common)
                for j in range(k - 1))
        out.append(Measurement(reps=reps, segments=segs, **summarize(ts, rounds), **common))
    return out


def measure_module(module, input_shape: tuple[int, ...], device: Any = "cpu",
                   threads: int | None = None, batch: int = 1, channels_last: bool = False,
                   warmup: int = 5, reps: int = 20, rounds: int = 4,
                   amp: str | None = None) -> Measurement:
    """Latency of ``module`` on one input of shape ``(batch, *input_shape)`` (see module doc).

    The module is moved to ``device`` (and to channels_last when asked) and put in eval mode;
    it is left there."""
    return measure_modules([(module, tuple(input_shape))], device, threads, batch, channels_last,
                           warmup, reps, rounds, amp)[0]


def measure(model_or_spec, device: Any = "cpu", threads: int | None = None, batch: int = 1,
            channels_last: bool = False, warmup: int = 5, reps: int = 20,
            input_shape: tuple[int, int, int] | None = None, rounds: int = 4,
            amp: str | None = None) -> Measurement:
    """Measured latency of a whole network: a :class:`~igcv_nas.arch.spec.NetworkSpec` (built here,
    input ``in_chs x input_size x input_size``) or an ``nn.Module`` (``input_shape`` = (C, H, W)
    required). Median, p90, fastest pass and the per-round medians with their spread over
    ``reps`` timed passes in ``rounds`` rounds after ``warmup`` untimed ones (:func:`summarize`).

    Args:
        model_or_spec (NetworkSpec | nn.Module): the network to time, as a spec or a module.
        device: the torch device to time on (``cpu``, ``cuda``, ``cuda:N``).
        threads: torch CPU threads during the measurement; None: leave the setting.
        batch: the batch size of the input.
        channels_last: run in the channels-last memory format.
        warmup: untimed passes first.
        reps: timed passes.
        input_shape: (C, H, W) of one input; required for a module, optional for a spec.
        rounds: rounds the timed passes are summarised in.
        amp: ``fp16`` / ``bf16`` (``torch.autocast`` of the device), or None for fp32.

    Returns:
        The :class:`Measurement` (ms) of the network.

    Raises:
        LatencyError: a module without ``input_shape``; an unknown or unavailable device; a
            ``threads``, ``batch``, ``warmup``, ``reps`` or ``rounds`` that is not a positive
            (``warmup``: non-negative) integer; an unknown ``amp``."""
    if isinstance(model_or_spec, NetworkSpec):
        from ..nn.build import build_model
        spec = model_or_spec
        module = build_model(spec)
        shape = input_shape or (spec.in_chs, spec.input_size, spec.input_size)
    else:
        if input_shape is None:
            raise LatencyError("measure(module): input_shape=(C, H, W) is required for a module")
        module, shape = model_or_spec, tuple(input_shape)
    return measure_module(module, shape, device, threads, batch, channels_last, warmup, reps,
                          rounds, amp)


# ---------------------------------------------------------------------------------------------
# keys: one entry per distinct (piece, shapes, settings)


def _perm_kind(p: tuple[int, ...] | None) -> str:
    if p is None:
        return "-"
    from ..arch.perm import interleave_groups
    g = interleave_groups(p)
    return f"shuffle{g}" if g is not None else "gather"


def _op_key(op: ConvOp) -> str:
    groups = "+".join(f"{n}x{i}>{o}" for n, i, o in op.groups)
    return (f"{op.in_chs}>{op.out_chs} k{op.kernel} s{op.stride} g{groups} "
            f"{'a' if op.act else 'l'} p{_perm_kind(op.perm)}")


def _settings(res: int, batch: int, channels_last: bool, amp: str | None = None) -> str:
    return f"r{res} b{batch} {'nhwc' if channels_last else 'nchw'}" + (f" {amp}" if amp else "")


def block_key(block: Block, res: int, act: str, batch: int = 1, channels_last: bool = False,
              amp: str | None = None) -> str:
    """LUT key of a block at input resolution ``res`` (see module doc)."""
    ops = "; ".join(_op_key(op) for op in block.ops)
    return (f"block {block.kind} {act} {'res' if block.residual else 'nores'} "
            f"{_settings(res, batch, channels_last, amp)} [{ops}]")


def stem_key(spec: NetworkSpec, batch: int = 1, channels_last: bool = False,
             amp: str | None = None) -> str:
    s = spec.stem_op
    return (f"stem {spec.act} {s.in_chs}>{s.out_chs} k{s.kernel} s{s.stride} "
            f"{_settings(spec.input_size, batch, channels_last, amp)}")


def _head_key(act: str, last: int, head_chs: int, num_classes: int, res: int, batch: int,
              channels_last: bool, amp: str | None) -> str:
    return (f"head {act} {last}>{head_chs} classes{num_classes} "
            f"{_settings(res, batch, channels_last, amp)}")


def _blocks_res(spec: NetworkSpec) -> tuple[list[tuple[Block, int]], int, int]:
    """[(block, input resolution)], final resolution, channels entering the head."""
    res = out_res(spec.input_size, spec.stem.stride)
    out = []
    for _, b in spec.blocks():
        out.append((b, res))
        for op in b.ops:
            res = out_res(res, op.stride)
    return out, res, spec.last_chs


def head_key(spec: NetworkSpec, batch: int = 1, channels_last: bool = False,
             amp: str | None = None) -> str:
    _, res, last = _blocks_res(spec)
    return _head_key(spec.act, last, spec.head_chs, spec.num_classes, res, batch, channels_last,
                     amp)


def _build_block(block: Block, act: str):
    from ..nn.build import build_block
    return build_block(block, act)


def _build_stem(spec: NetworkSpec):
    from ..nn.build import build_stem
    return build_stem(spec)


def _build_head(spec: NetworkSpec):
    from ..nn.build import build_head
    return build_head(spec)


# a piece of a network to time: its key, a builder of its module, its input shape (C, H, W)
_Piece = tuple[str, Callable[[], Any], tuple[int, int, int]]


def _pieces(spec: NetworkSpec, batch: int, channels_last: bool,
            amp: str | None = None) -> list[_Piece]:
    # every piece is built by igcv_nas.nn.build (the modules IGCNet runs); the builders import
    # torch only when called: keys (and so prediction) need no torch
    blocks, res, last = _blocks_res(spec)
    out: list[_Piece] = [(stem_key(spec, batch, channels_last, amp), lambda: _build_stem(spec),
                          (spec.in_chs, spec.input_size, spec.input_size))]
    for b, r in blocks:
        out.append((block_key(b, r, spec.act, batch, channels_last, amp),
                    (lambda b=b: _build_block(b, spec.act)), (b.in_chs, r, r)))
    out.append((head_key(spec, batch, channels_last, amp), lambda: _build_head(spec),
                (last, res, res)))
    return out


def network_keys(spec: NetworkSpec, batch: int = 1, channels_last: bool = False,
                 amp: str | None = None) -> list[str]:
    """The LUT keys of ``spec`` in forward order: stem, every block, head."""
    return [k for k, _, _ in _pieces(spec, batch, channels_last, amp)]


# ---------------------------------------------------------------------------------------------
# the lookup table


class LUT:
    """Per-piece latency table measured on one device with one set of settings (module doc)."""

    def __init__(self, device: str = "cpu", threads: int | None = None, batch: int = 1,
                 channels_last: bool = False, warmup: int = 5, reps: int = 20,
                 device_name: str = "", torch_version: str = "", statistic: str = "median",
                 rounds: int = 4, amp: str | None = None):
        if statistic not in STATISTICS:
            raise LatencyError(f"statistic {statistic!r}: accepted: {', '.join(STATISTICS)}")
        _check_amp(amp)
        self.statistic, self.rounds, self.amp = statistic, rounds, amp
        self.device, self.threads, self.batch = str(device), threads, batch
        self.channels_last, self.warmup, self.reps = bool(channels_last), warmup, reps
        self.device_name, self.torch_version = device_name, torch_version
        self.entries: dict[str, dict] = {}
        self.calibration: list[dict] = []
        self.correction: dict = {"scale": 1.0, "offset_ms": 0.0, "points": 0}
        self.build_s = 0.0           # seconds spent measuring entries and calibration, cumulative
        self.measure_calls = 0       # measurements made through this object (not saved)
        self.path: str | None = None
        self.learned_config: dict = {}   # hyperparameters of the learned predictor (file)
        self._learned = None             # its fitted form, refitted when the table changes
        self._learned_state: tuple | None = None
        self._learned_check: dict | None = None  # the saved fit's check values (file)

    # -- the learned predictor -----------------------------------------------------------------
    def learned(self):
        """The kernel-level learned predictor of this table
        (:class:`igcv_nas.evaluate.latency_model.LearnedPredictor`), fitted on its entries and
        calibration networks the first time it is asked for, and again after the table
        changed. Needs scikit-learn."""
        from .latency_model import LearnedPredictor
        state = self._state()
        if self._learned is None or self._learned_state != state:
            self._learned = LearnedPredictor.fit(self, **self.learned_config)
            self._learned_state = state
            if self._learned_check:
                self._learned.verify(self._learned_check)
        return self._learned

    def _field(self) -> str:
        return _FIELD[self.statistic]

    # -- file ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": LUT_FORMAT, "device": self.device, "device_name": self.device_name,
                "threads": self.threads, "batch": self.batch, "statistic": self.statistic,
                "channels_last": self.channels_last,
                "warmup": self.warmup, "reps": self.reps, "torch": self.torch_version,
                "rounds": self.rounds, "amp": self.amp,
                "build_s": round(self.build_s, 3), "correction": self.correction,
                "calibration": self.calibration, "entries": self.entries,
                **self._learned_dict()}

    def _learned_dict(self) -> dict:
        if self._learned is not None and self._learned_state == self._state():
            return {"learned": self._learned.to_dict()}
        d: dict = {}
        if self.learned_config:
            d["config"] = self.learned_config
        chk = self._learned_check
        if chk and (chk.get("entries"), chk.get("calibration")) == self._state()[:2]:
            d["check"] = chk  # still describes this table: kept for the next refit to verify
        return {"learned": d} if d else {}

    def _state(self) -> tuple:
        return (len(self.entries), len(self.calibration), self.statistic)

    def save(self, path: str | os.PathLike) -> None:
        """Write the table as JSON atomically (temporary file in the same folder + replace)."""
        path = os.fspath(path)
        atomic_write(path, lambda f: json.dump(self.to_dict(), f, indent=1, sort_keys=True))
        self.path = path

    @classmethod
    def load(cls, path: str | os.PathLike) -> LUT:
        """Read a LUT file (:class:`LatencyError` with one line when it cannot be used)."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except OSError as e:
            raise LatencyError(f"{path}: cannot read LUT file ({e.strerror})") from None
        except json.JSONDecodeError as e:
            raise LatencyError(f"{path}: malformed LUT JSON at line {e.lineno} column {e.colno}: "
                               f"{e.msg}") from None
        if not isinstance(d, dict) or d.get("format") != LUT_FORMAT:
            fmt = d.get("format") if isinstance(d, dict) else None
            raise LatencyError(f"{path}: not a latency LUT "
                               f"(format={fmt!r}; expected {LUT_FORMAT!r})")
        try:
            lut = cls(d["device"], d.get("threads"), int(d["batch"]), bool(d["channels_last"]),
                      int(d.get("warmup", 5)), int(d.get("reps", 20)), d.get("device_name", ""),
                      d.get("torch", ""), d.get("statistic", "median"), int(d.get("rounds", 1)),
                      d.get("amp"))
            entries = d["entries"]
            if not isinstance(entries, dict) or not all(
                    isinstance(v, dict) and isinstance(v.get("ms"), (int, float))
                    for v in entries.values()):
                raise TypeError("entries must map keys to {'ms': number, ...}")
            if len(entries) > MAX_LUT_ENTRIES:
                raise ValueError(f"{len(entries):,} entries; accepted: at most "
                                 f"{MAX_LUT_ENTRIES:,}")
            for key, v in entries.items():
                for field, x in v.items():
                    _check_ms(x, f"entry {key[:80]!r} field {field!r}", none_ok=field != "ms")
            lut.entries = entries
            lut.calibration = list(d.get("calibration", []))
            if len(lut.calibration) > MAX_LUT_ENTRIES:
                raise ValueError(f"{len(lut.calibration):,} calibration networks; accepted: at "
                                 f"most {MAX_LUT_ENTRIES:,}")
            for i, c in enumerate(lut.calibration):
                if not isinstance(c, dict):
                    raise TypeError(f"calibration[{i}] must be an object")
                for field, x in c.items():
                    if isinstance(x, list):
                        for j, y in enumerate(x):
                            if not isinstance(y, str):
                                _check_ms(y, f"calibration[{i}].{field}[{j}]")
                    elif not isinstance(x, (str, dict)):
                        _check_ms(x, f"calibration[{i}].{field}", none_ok=True)
            corr = d.get("correction", {})
            lut.correction = {"scale": float(corr.get("scale", 1.0)),
                              "offset_ms": float(corr.get("offset_ms", 0.0)),
                              "points": int(corr.get("points", 0))}
            if not (math.isfinite(lut.correction["scale"]) and lut.correction["scale"] > 0
                    and math.isfinite(lut.correction["offset_ms"])):
                raise ValueError(f"correction {corr!r}; accepted: a finite scale > 0 and a "
                                 f"finite offset_ms")
            lut.build_s = float(d.get("build_s", 0.0))
            learned = d.get("learned") or {}
            if not isinstance(learned, dict):
                raise TypeError("learned must be an object")
            from .latency_model import check_config
            lut.learned_config = dict(check_config(learned.get("config") or {}))
            lut._learned_check = learned.get("check")
            if lut.statistic == "rounds" and not all("stable" in v for v in entries.values()):
                raise ValueError("statistic 'rounds' but entries without 'stable'")
        except (KeyError, TypeError, ValueError) as e:
            raise LatencyError(f"{path}: malformed LUT ({type(e).__name__}: {e})") from None
        lut.path = path
        return lut

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    # -- measuring -----------------------------------------------------------------------------
    def add_spec(self, spec: NetworkSpec) -> int:
        """Measure every piece of ``spec`` not yet in the table, all of them round-robin in one
        :func:`measure_modules` call; returns how many were added."""
        t0 = time.perf_counter()
        todo: dict[str, tuple] = {}
        for key, make, shape in _pieces(spec, self.batch, self.channels_last, self.amp):
            if key not in self.entries and key not in todo:
                todo[key] = (make, shape)
        if todo:
            self.measure_calls += 1
            ms = measure_modules([(make(), shape) for make, shape in todo.values()], self.device,
                                 self.threads, self.batch, self.channels_last, self.warmup,
                                 self.reps, self.rounds, self.amp)
            for key, m in zip(todo, ms):
                self.entries[key] = _entry(m)
        self.build_s += time.perf_counter() - t0
        return len(todo)

    def raw_sum(self, spec: NetworkSpec) -> float:
        """Sum of the entries of ``spec`` (MissingKey naming the first absent key)."""
        total = 0.0
        for key in network_keys(spec, self.batch, self.channels_last, self.amp):
            e = self.entries.get(key)
            if e is None:
                where = f" {self.path}" if self.path else ""
                raise MissingKey(f"latency LUT{where} has no entry for {key!r} (measured on "
                                 f"{self.device}, batch {self.batch}); rebuild it with specs that "
                                 "contain this piece or predict with measure_missing=True")
            total += e[self._field()]
        return total

    def calibrate(self, specs: Iterable[NetworkSpec], n: int = 6) -> None:
        """Measure up to ``n`` whole networks spread over the range of LUT sums and fit the
        correction ``scale * sum + offset_ms`` (module doc)."""
        specs = list(specs)
        if n <= 0 or not specs:
            return
        t0 = time.perf_counter()
        ranked = sorted(specs, key=self.raw_sum)
        if len(ranked) <= n:
            chosen = ranked
        else:
            idx = (sorted({round(i * (len(ranked) - 1) / (n - 1)) for i in range(n)}) if n > 1
                   else [len(ranked) // 2])
            chosen = [ranked[i] for i in idx]
        seen = {c["arch_id"] for c in self.calibration}
        for spec in chosen:
            if spec.arch_id in seen:
                continue
            seen.add(spec.arch_id)
            self.measure_calls += 1
            self.calibration.append(self._calibration_point(spec))
        self.build_s += time.perf_counter() - t0
        self.correction = fit_correction(self.calibration)

    def _calibration_point(self, spec: NetworkSpec) -> dict:
        """The whole network and its distinct pieces timed round-robin in **one**
        :func:`measure_modules` call, so that the ratio whole / sum of pieces is taken under
        the same machine conditions (a slow spell hits both alike). The whole network is
        probed (a timestamp after its stem, after each block and after the classifier), which
        gives the time of every piece **in context**: ``context_ms`` in forward order, beside
        the network's ``keys``; with ``pieces_ms`` (the same pieces measured alone in the same
        call) these are the training rows of the learned predictor's neighbour model.

        The probes cost time of their own (a Python hook per piece, and the module call's slow
        path), measured here at 2-4% of a 224x224 network on one CPU thread. So the whole
        network is in the call twice: the probed copy gives ``context_ms`` (and
        ``probed_ms``), an unprobed copy ``measured_ms``, the figure the correction is fitted
        to, taken like :func:`measure` takes the networks it predicts."""
        from ..nn.build import build_model
        pieces: dict[str, tuple] = {}
        count: dict[str, int] = {}
        keys = []
        for key, make, shape in _pieces(spec, self.batch, self.channels_last, self.amp):
            pieces.setdefault(key, (make, shape))
            count[key] = count.get(key, 0) + 1
            keys.append(key)
        probed = build_model(spec)
        whole = (spec.in_chs, spec.input_size, spec.input_size)
        items = [(probed, whole), (build_model(spec), whole)]
        items += [(make(), shape) for make, shape in pieces.values()]
        ms = measure_modules(items, self.device, self.threads, self.batch, self.channels_last,
                             self.warmup, self.reps, self.rounds, self.amp,
                             probes={0: [probed.stem, *probed.blocks, probed.classifier]})
        alone = {k: m.value(self.statistic) for k, m in zip(pieces, ms[2:])}
        total = sum(count[k] * v for k, v in alone.items())
        return {"arch_id": spec.arch_id, "sum_ms": round(total, 5),
                "measured_ms": round(ms[1].value(self.statistic), 5),
                "spread": None if ms[1].spread is None else round(ms[1].spread, 5),
                "probed_ms": round(ms[0].value(self.statistic), 5),
                "keys": keys, "pieces_ms": [round(alone[k], 5) for k in keys],
                "context_ms": [round(seg.value(self.statistic), 5) for seg in ms[0].segments]}

    def predict(self, spec: NetworkSpec, measure_missing: bool = False,
                method: str = "lut") -> float:
        """Predicted ms of ``spec``: ``lut`` = corrected sum of entries (pieces absent are
        measured when ``measure_missing``, else :class:`MissingKey`); ``learned`` = the
        learned predictor (:meth:`learned`), which models absent pieces and never measures."""
        if method not in METHODS:
            raise LatencyError(f"method {method!r}: accepted: {', '.join(METHODS)}")
        if method == "learned":
            return self.learned().predict(spec)
        if measure_missing:
            self.add_spec(spec)
        c = self.correction
        return c["scale"] * self.raw_sum(spec) + c["offset_ms"]


def _entry(m: Measurement) -> dict:
    """A LUT entry from a measurement: median (``ms``), p90, fastest pass (``min``), fastest
    round median (``stable``) and the rounds' ``spread``."""
    return {"ms": round(m.median_ms, 5), "p90": round(m.p90_ms, 5), "min": round(m.min_ms, 5),
            "stable": round(m.stable_ms, 5),
            "spread": None if m.spread is None else round(m.spread, 5)}


def fit_correction(points: list[dict]) -> dict:
    """``{'scale', 'offset_ms', 'points'}`` from calibration points (``sum_ms``, ``measured_ms``).

    The default is a pure scale, the median of ``measured / sum`` (robust to one noisy point).
    With 8 or more points whose sums spread by at least 1.5x, the least-squares line
    ``measured = scale * sum + offset`` replaces it when its median absolute relative error on
    the points is lower (scale in [0.5, 2], no negative prediction for the smallest sum).
    Identity without points."""
    xs = [p["sum_ms"] for p in points if p["sum_ms"] > 0]
    ys = [p["measured_ms"] for p in points if p["sum_ms"] > 0]
    if not xs:
        return {"scale": 1.0, "offset_ms": 0.0, "points": 0}

    def err(a: float, b: float) -> float:
        return statistics.median(abs((a * x + b) / y - 1) for x, y in zip(xs, ys))

    a, b = statistics.median(y / x for x, y in zip(xs, ys)), 0.0
    if len(xs) >= 8 and max(xs) >= 1.5 * min(xs):
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        la = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        lb = my - la * mx
        if 0.5 <= la <= 2.0 and la * min(xs) + lb > 0 and err(la, lb) < err(a, b):
            a, b = la, lb
    return {"scale": round(a, 6), "offset_ms": round(b, 6), "points": len(xs)}


def build_lut(specs: Iterable[NetworkSpec], device: Any = "cpu", threads: int | None = None,
              batch: int = 1, channels_last: bool = False, warmup: int = 5, reps: int = 20,
              calibrate: int = 6, lut: LUT | None = None,
              progress: Callable[[int, int], None] | None = None,
              statistic: str = "median", rounds: int = 4, amp: str | None = None) -> LUT:
    """Measure every distinct piece (stem, blocks at their resolutions, head) of ``specs`` on
    ``device``, then fit the correction on ``calibrate`` whole networks. With ``lut`` given,
    only the pieces it lacks are measured (its settings are used).

    Args:
        specs: the networks whose pieces are measured.
        device: the torch device to measure on (ignored with ``lut``).
        threads: torch CPU threads (recorded for a CPU device only).
        batch: the batch size.
        channels_last: measure in the channels-last memory format.
        warmup: untimed passes of each piece.
        reps: timed passes of each piece.
        calibrate: whole networks of ``specs`` measured to fit the correction (0: none).
        lut: a table to extend; None: a new one with these settings.
        progress: called as ``progress(done, total)`` after each spec.
        statistic: the statistic entries are predicted from (:data:`STATISTICS`).
        rounds: rounds the timed passes are summarised in.
        amp: ``fp16`` / ``bf16``, or None for fp32.

    Returns:
        The :class:`LUT` (``lut`` itself when given) with every piece of ``specs`` and the
        fitted correction.

    Raises:
        LatencyError: an unknown or unavailable device, a count that is not a positive
            integer, an unknown ``statistic`` or ``amp``."""
    specs = list(specs)
    _check_counts(threads, batch, warmup, reps)
    if lut is None:
        import torch
        dev = resolve_device(device)
        lut = LUT(str(dev), threads if dev.type == "cpu" else None, batch, channels_last,
                  warmup, reps, device_name(dev), torch.__version__, statistic, rounds, amp)
    for i, spec in enumerate(specs):
        lut.add_spec(spec)
        if progress:
            progress(i + 1, len(specs))
    lut.calibrate(specs, calibrate)
    return lut


def predict(spec: NetworkSpec, lut: LUT, device: Any = None,
            measure_missing: bool = False, method: str = "lut") -> float:
    """Predicted latency in ms of ``spec`` on the LUT's device.

    ``method="lut"`` (default): ``scale * sum(entries) + offset_ms``. A piece missing from the
    LUT raises :class:`MissingKey`, unless ``device`` is given (it must be the LUT's device) or
    ``measure_missing`` is True: then it is measured and added to ``lut`` (save it to keep it).

    ``method="learned"``: the kernel-level learned predictor fitted on the LUT
    (:mod:`igcv_nas.evaluate.latency_model`); pieces missing from the LUT are predicted by its piece
    model, so nothing is measured (``device`` / ``measure_missing`` only check the device).

    Args:
        spec: the network to predict.
        lut: the latency table.
        device: the device to measure missing pieces on; it must be the LUT's (given, it
            implies ``measure_missing``).
        measure_missing: measure the pieces the LUT lacks and add them to ``lut``.
        method: ``lut`` or ``learned`` (:data:`METHODS`).

    Returns:
        The predicted latency of ``spec`` in ms.

    Raises:
        LatencyError: an unknown ``method``, a ``device`` that is not the LUT's (or not a
            device), or a learned predictor with no LUT entries to learn from.
        MissingKey: ``method="lut"``, a piece absent from the LUT and nothing to be measured.
        ImportError: ``method="learned"`` without scikit-learn."""
    if method not in METHODS:
        raise LatencyError(f"method {method!r}: accepted: {', '.join(METHODS)}")
    if device is not None:
        if str(resolve_device(device)) != lut.device:
            raise LatencyError(f"LUT was measured on {lut.device}, not on {device}")
        measure_missing = True
    if method == "learned":
        return lut.predict(spec, method="learned")
    return lut.predict(spec, measure_missing)


# ---------------------------------------------------------------------------------------------
# the space's latency floor


def min_latency_ms(space: Any, predictor: Any, target: tuple[int, int] | None = None,
                   cifar: bool = False, method: str = "lut", missing: str = "zero") -> float:
    """A lower bound on the latency ``predictor`` predicts for any network of ``space``, in ms:
    a ``--latency`` budget below it is met by no sample.

    ``space`` is a :class:`igcv_nas.arch.space.SearchSpace`; ``predictor`` a :class:`LUT`
    (``method`` ``lut`` or ``learned``) or a
    :class:`igcv_nas.evaluate.latency_model.LearnedPredictor` (then ``learned``). The networks are
    taken as the search predicts them: at ``target`` = ``(input_size, num_classes)`` (None: the
    space's own target) and, with ``cifar=True``, in the CIFAR form (stem stride 1, stage 1 not
    downsampling; what :meth:`~igcv_nas.arch.spec.NetworkSpec.with_target` gives with
    ``cifar=True``).

    * ``lut``: the prediction is ``scale * (stem + sum of blocks + head) + offset_ms`` with a
      positive scale, a sum of per-piece entries, so the minimum over the space is found
      exactly by dynamic programming over per-block choices
      (:meth:`~igcv_nas.arch.space.SearchSpace.min_over_samples`; exact up to floating-point
      summation order). A piece the LUT lacks would be measured when predicted, and a
      measurement is >= 0: ``missing="zero"`` (default) counts it as 0, which keeps the result
      a true lower bound (exact when the LUT holds every piece of the space);
      ``missing="raise"`` raises :class:`MissingKey` for the first absent piece instead.
    * ``learned``: the prediction is ``scale * sum_i base_i * exp(h_i)``, ``base_i`` the LUT
      entry or the piece model's price (a function of the piece alone) and ``h_i`` the
      neighbour model, which also depends on the neighbours and the position. Each piece is
      given its smallest ``h`` over every context
      (:meth:`~igcv_nas.evaluate.latency_model.LearnedPredictor.min_log_factors`) and the sum is
      minimised exactly as above: exact when ``h`` is a constant (fewer calibration rows than
      ``min_context_rows``) or its trees never split on a neighbour feature, otherwise a sound
      lower bound (the smallest contexts of neighbouring pieces need not agree).

    Cost: one LUT key (and lookup, or piece-model price, batched) per distinct block of the
    space at each resolution and one per last-stage width -- the local combinations the space
    checks at load (bounded by ``MAX_SPACE_COMBINATIONS``); no torch, nothing measured. On the
    shipped spaces 0.1-1 s on a busy 2-core VM, most of it building blocks and keys (blocks are
    cached on the space, so a second call is faster); the learned method computes the keys twice
    and prices the unmeasured pieces in one batch.

    Args:
        space: the search space (:class:`igcv_nas.arch.space.SearchSpace`).
        predictor: a :class:`LUT` or a
            :class:`~igcv_nas.evaluate.latency_model.LearnedPredictor`.
        target: ``(input_size, num_classes)`` the networks are taken at (a 0 or None element,
            or None: the space's own; the input size is 32 with ``cifar``).
        cifar: take the networks in the CIFAR form.
        method: ``lut`` or ``learned`` (a LearnedPredictor always uses ``learned``).
        missing: ``zero`` (a piece the LUT lacks counts as 0 ms) or ``raise``.

    Returns:
        The lower bound in ms.

    Raises:
        LatencyError: an unknown ``method`` or ``missing``, or a learned predictor that has to
            price pieces but has no LUT entries to learn from.
        MissingKey: ``missing="raise"`` and the LUT lacks a piece of the space.
        ImportError: ``method="learned"`` with a LUT, without scikit-learn."""
    from .latency_model import LearnedPredictor
    if method not in METHODS:
        raise LatencyError(f"method {method!r}: accepted: {', '.join(METHODS)}")
    if missing not in ("zero", "raise"):
        raise LatencyError(f"missing {missing!r}: accepted: zero, raise")
    if isinstance(predictor, LearnedPredictor):
        learned, settings, method = predictor, predictor._settings, "learned"
    else:
        settings = predictor
        learned = predictor.learned() if method == "learned" else None
    batch, cl, amp = settings.batch, settings.channels_last, settings.amp
    size, classes = target if target is not None else (None, None)
    size = size or (32 if cifar else space.target.input_size)
    classes = classes or space.target.num_classes
    spec0 = NetworkSpec(input_size=size, num_classes=classes,
                        stem=replace(space.stem, stride=1) if cifar else space.stem, stages=(),
                        head_chs=space.head_chs, act=space.act, in_chs=space.in_chs)

    def keys_of(fn: Callable[[str], float]) -> float:
        """The space's smallest sum of ``fn(key)`` over a network's pieces."""
        return fn(stem_key(spec0, batch, cl, amp)) + space.min_over_samples(
            lambda b, r: fn(block_key(b, r, space.act, batch, cl, amp)),
            lambda w, r: fn(_head_key(space.act, w, space.head_chs, classes, r, batch, cl, amp)),
            size, cifar)

    if learned is None:
        lut, field = predictor, _FIELD[predictor.statistic]

        def entry(key: str) -> float:
            e = lut.entries.get(key)
            if e is not None:
                return e[field]
            if missing == "raise":
                raise MissingKey(f"latency LUT has no entry for {key!r}: the space's latency "
                                 "floor needs every piece (or missing='zero')")
            return 0.0
        c = lut.correction
        return c["scale"] * keys_of(entry) + c["offset_ms"]

    seen: list[str] = []
    keys_of(lambda k: seen.append(k) or 0.0)  # every key once (min_over_samples memoises)
    seen = sorted(set(seen))
    todo = [k for k in seen if k not in learned.entries]
    priced = dict(zip(todo, learned.piece_ms(todo))) if todo else {}
    field = learned.field
    low = {k: (learned.entries[k][field] if k in learned.entries else priced[k]) * math.exp(h)
           for k, h in zip(seen, learned.min_log_factors(seen))}
    return learned.scale * keys_of(low.__getitem__)
