"""``igcv-latency`` as library calls: the latency report of one network, and a LUT file built
from search spaces and zoo networks. The command is parse -> these calls -> print, so a caller
from Python gets exactly its checks, messages, defaults and files::

    from igcv_nas.evaluate.latency_run import latency_report, prepare_lut

    r = latency_report("igcv3_d_0.25_cifar", threads=1)            # measured only
    r = latency_report("my_spec.json", lut="lut_cpu.json")         # measured + predicted
    r["measured"]["median_ms"], r.get("predicted_ms"), r.get("error")

    built = prepare_lut("lut_cpu.json", spaces=["mixed"], n=50, cifar=True).run()
    built.measured_now, built.lut.correction

:func:`latency_report` returns the dict that ``igcv-latency SPEC --json`` prints. It checks the
measurement settings (the flag a value is about named as the command names it), reads and validates
the spec (a violation is a :class:`~igcv_nas.arch.spec.SpecError` listing all of them), reads
``lut`` and checks that ``device`` is the LUT's; with a LUT the measurement uses the LUT's settings
(device, threads, batch, memory format, statistic, AMP, rounds), so the error figures compare like
with like. Pieces the LUT lacks are measured on its device (unless ``measure=False``: then a
:class:`~igcv_nas.evaluate.latency.MissingKey` names the first) and the file is rewritten with them,
atomically; a file that cannot be rewritten is a :class:`LUTWriteError`.

:func:`prepare_lut` makes every check of ``igcv-latency build-lut`` and creates nothing: the
settings, the device, the zoo names, the spaces (``n`` random architectures from each, drawn by
Optuna's ``RandomSampler(seed)``, imported only when ``n > 0``), that there is something to
measure, and that an existing ``out`` file was measured with the same settings (it is then
extended, not re-measured). :meth:`PreparedLUT.run` measures and writes ``out`` atomically.
Every refusal is an :class:`igcv_nas.errors.IGCVError` with the command's one-line message.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from . import latency as _lat
from ..errors import InputError
from ..arch.sources import resolve_spec, spec_label
from ..arch.spec import NetworkSpec, SpecError

__all__ = ["LUTBuild", "LUTWriteError", "PreparedLUT", "build_lut_file", "check_protocol",
           "latency_report", "prepare_lut", "sample_networks"]


class LUTWriteError(_lat.LatencyError, OSError):
    """A LUT file the OS refused to write (one line: the path and the OS's reason)."""


# the most each setting may ask for: these set the amount of work and memory of a measurement
# (threads and batch) or of a build (networks sampled, calibrations), far above real use
MOST = {"--threads": 256, "--batch": 1024, "--reps": 100_000, "--warmup": 100_000,
        "--rounds": 100, "--n": 10_000, "--calibrate": 1_000, "--seed": 2**32 - 1}


def _count(flag: str, v: int | None, zero_ok: bool = False) -> None:
    if v is None:
        return
    most = MOST.get(flag)
    if (v < 0 if zero_ok else v <= 0) or (most is not None and v > most):
        low = 0 if zero_ok else 1
        raise InputError(f"{flag} {v}; accepted: an integer from {low} to {most:,}"
                         if most is not None else
                         f"{flag} {v} must be a {'non-negative' if zero_ok else 'positive'} "
                         f"integer")


def check_protocol(threads: int | None = None, batch: int = 1, warmup: int = 5, reps: int = 20,
                   rounds: int = 4) -> None:
    """Refuse a measurement setting that cannot be used (:class:`InputError` naming the flag:
    ``--threads``, ``--batch``, ``--reps``, ``--warmup`` (may be 0), ``--rounds``)."""
    _count("--threads", threads)
    _count("--batch", batch)
    _count("--reps", reps)
    _count("--warmup", warmup, zero_ok=True)
    _count("--rounds", rounds)


def _choice(flag: str, v: str | None, accepted: Sequence[str], none_ok: bool = False) -> None:
    # the command's argparse choices, for a caller from Python
    if not (v is None and none_ok) and v not in accepted:
        raise InputError(f"{flag} {v!r}: accepted: {', '.join(accepted)}"
                         + (" (or None: fp32)" if none_ok else ""))


def _write_error(path: str, e: OSError) -> LUTWriteError:
    return LUTWriteError(f"{path}: cannot write LUT ({e.strerror})")


# ---------------------------------------------------------------------------------------------
# the report of one network


def latency_report(source: NetworkSpec | str | os.PathLike, *,
                   lut: str | os.PathLike | None = None, device: str | None = None,
                   threads: int | None = None, batch: int = 1, channels_last: bool = False,
                   warmup: int = 5, reps: int = 20, rounds: int = 4, amp: str | None = None,
                   measure: bool = True) -> dict:
    """What ``igcv-latency SOURCE --json`` prints, for ``source`` (a spec, a spec JSON file or a
    zoo name): ``name``, ``arch_id``, ``input_size``; unless ``measure=False``, ``measured``
    (:meth:`igcv_nas.evaluate.latency.Measurement.as_dict`); with ``lut``, ``predicted_ms`` (the
    corrected LUT sum), ``predicted_learned_ms`` (or ``learned_unavailable`` without
    scikit-learn), ``lut`` (its path and settings, ``measured_now``: pieces added to the file)
    and, when measured too, ``error`` / ``error_learned`` (prediction / measured LUT statistic
    - 1). Without ``lut`` the measurement uses ``device`` (default cpu) and these settings; with
    it, the LUT's (module doc). Refusals: module doc.

    Args:
        source: a :class:`~igcv_nas.arch.spec.NetworkSpec`, a spec JSON file or a zoo name.
        lut: a LUT file to predict with (pieces it lacks are measured and saved into it unless
            ``measure=False``); None or "": no prediction.
        device: the device to measure on without ``lut`` (default cpu); with ``lut`` it must
            be the LUT's.
        threads: torch CPU threads of the measurement (without ``lut``).
        batch: the batch size (without ``lut``).
        channels_last: the channels-last memory format (without ``lut``).
        warmup: untimed passes.
        reps: timed passes.
        rounds: rounds the timed passes are summarised in (without ``lut``).
        amp: ``fp16`` / ``bf16`` or None (without ``lut``).
        measure: measure the network (False needs ``lut``: prediction only).

    Returns:
        The report dict described above.

    Raises:
        InputError: a measurement setting out of range, an unknown ``amp``, or
            ``measure=False`` without ``lut``.
        SpecError: ``source`` cannot be read as a spec, or the spec has violations (all
            listed).
        LatencyError: ``lut`` cannot be read, was measured on another device than ``device``,
            or the device is unknown or unavailable.
        MissingKey: ``measure=False`` and the LUT lacks a piece of the spec.
        LUTWriteError: the LUT file, extended with pieces measured now, cannot be written."""
    check_protocol(threads, batch, warmup, reps, rounds)
    _choice("--amp", amp, _lat.AMP_DTYPES, none_ok=True)
    if not measure and not lut:
        raise InputError("--no-measure needs --lut FILE")
    if isinstance(source, NetworkSpec):
        spec, label = source, spec_label(source)
    else:
        spec, label = resolve_spec(source), os.fspath(source)
    from ..arch.validation import check
    rep = check(spec)
    if not rep.ok:
        raise SpecError(f"{label}: {len(rep.violations)} violation(s): "
                        + "; ".join(str(v) for v in rep.violations))
    out: dict = {"name": spec.name, "arch_id": spec.arch_id, "input_size": spec.input_size}
    if lut is None or lut == "":
        stat = "median"
        settings = (device or "cpu", threads, batch, channels_last, rounds, amp)
    else:
        path = os.fspath(lut)
        try:
            settings, stat = _predict_into(out, spec, path, device, measure)
            if measure:
                _measure_into(out, spec, settings, warmup, reps, stat)
        except OSError as e:
            raise _write_error(path, e) from e
        return out
    if measure:
        _measure_into(out, spec, settings, warmup, reps, stat)
    return out


def _predict_into(out: dict, spec: NetworkSpec, path: str, device: str | None,
                  measure: bool) -> tuple[tuple, str]:
    """Add the LUT's predictions of ``spec`` to ``out`` (saving pieces measured now); return the
    LUT's measurement settings and statistic."""
    lut = _lat.LUT.load(path)
    if device is not None and str(_lat.resolve_device(device)) != lut.device:
        raise _lat.LatencyError(f"{path} was measured on {lut.device}, not on {device}")
    n0 = len(lut)
    out["predicted_ms"] = round(lut.predict(spec, measure_missing=measure), 4)
    try:
        out["predicted_learned_ms"] = round(lut.predict(spec, method="learned"), 4)
    except ImportError as e:
        out["learned_unavailable"] = f"{e.name or e}: pip install scikit-learn"
    out["lut"] = {"path": path, "device": lut.device, "threads": lut.threads,
                  "statistic": lut.statistic, "amp": lut.amp,
                  "batch": lut.batch, "channels_last": lut.channels_last,
                  "measured_now": len(lut) - n0}
    if len(lut) > n0:
        lut.save(path)
    return ((lut.device, lut.threads, lut.batch, lut.channels_last, lut.rounds, lut.amp),
            lut.statistic)


def _measure_into(out: dict, spec: NetworkSpec, settings: tuple, warmup: int, reps: int,
                  stat: str) -> None:
    device, threads, batch, cl, rounds, amp = settings
    m = _lat.measure(spec, device, threads, batch, cl, warmup, reps, rounds=rounds, amp=amp)
    out["measured"] = m.as_dict()
    for k, e in (("predicted_ms", "error"), ("predicted_learned_ms", "error_learned")):
        if k in out:
            out[e] = round(out[k] / m.value(stat) - 1, 4)


# ---------------------------------------------------------------------------------------------
# building a LUT file


def sample_networks(spaces: Iterable[str] | None = None, n: int = 20, cifar: bool = False,
                    seed: int = 0) -> list[NetworkSpec]:
    """``n`` random architectures from each of ``spaces`` (names or YAML paths; None: every
    shipped space), each space drawn by its own ``optuna`` ``RandomSampler(seed)`` -- the
    networks ``igcv-latency build-lut`` measures (:class:`~igcv_nas.arch.space.SpaceError` for a
    space that cannot be read).

    Args:
        spaces: space names or YAML paths; None: every shipped space.
        n: architectures drawn from each space (0: none, and Optuna is not imported).
        cifar: draw them in the CIFAR form.
        seed: the seed of each space's ``RandomSampler``.

    Returns:
        The sampled specs, space by space (``n`` of each).

    Raises:
        InputError: ``n`` is negative or above ``MOST["--n"]``.
        SpaceError: a space that cannot be found or read."""
    from ..arch.space import available_spaces, load_space
    _count("--n", n, zero_ok=True)
    if not n:
        return []
    import optuna  # only to sample: the same draws as a search's random sampler
    from optuna.samplers import RandomSampler
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    specs: list[NetworkSpec] = []
    for name in (available_spaces() if spaces is None else spaces):
        sp = load_space(name)
        study = optuna.create_study(sampler=RandomSampler(seed=seed))
        specs += [sp.sample(study.ask(), cifar=cifar) for _ in range(n)]
    return specs


@dataclass
class LUTBuild:
    """What :meth:`PreparedLUT.run` did: ``out`` written, the ``lut`` in it, how many
    ``networks`` were measured, how many entries were ``measured_now`` (the rest came from the
    existing file) and the ``seconds`` it took (measuring and writing)."""
    out: str
    lut: _lat.LUT
    networks: int
    measured_now: int
    seconds: float


@dataclass
class PreparedLUT:
    """A checked ``build-lut`` (:func:`prepare_lut`): the networks ``specs`` to measure into
    ``out`` with these settings, ``existing`` the LUT already in ``out`` (None: a new file)."""
    out: str
    specs: list[NetworkSpec]
    device: str
    threads: int | None
    batch: int
    channels_last: bool
    warmup: int
    reps: int
    rounds: int
    amp: str | None
    calibrate: int
    statistic: str
    existing: _lat.LUT | None

    def run(self, progress: Callable[[int, int, float], None] | None = None) -> LUTBuild:
        """Measure every piece of :attr:`specs` the LUT lacks, fit the correction and write
        :attr:`out` atomically; ``progress(i, n, seconds)`` after each network (measuring takes
        about 5 s a network at 224x224 on a CPU). A file the OS refuses is a
        :class:`LUTWriteError`."""
        before = len(self.existing) if self.existing else 0
        t0 = time.perf_counter()
        report = None if progress is None else (
            lambda i, n: progress(i, n, time.perf_counter() - t0))
        try:
            lut = _lat.build_lut(self.specs, self.device, self.threads, self.batch,
                                 self.channels_last, self.warmup, self.reps, self.calibrate,
                                 lut=self.existing, statistic=self.statistic, progress=report,
                                 rounds=self.rounds, amp=self.amp)
            lut.save(self.out)
        except OSError as e:
            raise _write_error(self.out, e) from e
        self.existing = lut
        return LUTBuild(self.out, lut, len(self.specs), len(lut) - before,
                        time.perf_counter() - t0)


def prepare_lut(out: str | os.PathLike, *, spaces: Iterable[str] | None = None,
                zoo: Iterable[str | NetworkSpec] = (), n: int = 20, cifar: bool = False,
                seed: int = 0, device: str | None = "cpu", threads: int | None = None,
                batch: int = 1, channels_last: bool = False, warmup: int = 5, reps: int = 20,
                rounds: int = 4, amp: str | None = None, calibrate: int = 6,
                statistic: str = "median") -> PreparedLUT:
    """Check a ``build-lut`` of ``out`` (module doc) and return it prepared; nothing is created
    or measured. ``zoo``: networks added to the samples (zoo names, spec files or specs);
    ``statistic``: what the LUT predicts (``median``, ``min`` or ``rounds``).

    Args:
        out: the LUT file to write (an existing one is extended when its settings match).
        spaces: spaces to sample networks from (:func:`sample_networks`); None: every shipped
            space.
        zoo: networks added to the samples (zoo names, spec files or specs).
        n: architectures drawn from each space.
        cifar: draw them in the CIFAR form.
        seed: the seed of the sampling.
        device: the device to measure on (None: cpu).
        threads: torch CPU threads.
        batch: the batch size.
        channels_last: the channels-last memory format.
        warmup: untimed passes of each piece.
        reps: timed passes of each piece.
        rounds: rounds the timed passes are summarised in.
        amp: ``fp16`` / ``bf16``, or None for fp32.
        calibrate: whole networks measured to fit the correction.
        statistic: ``median``, ``min`` or ``rounds``.

    Returns:
        The :class:`PreparedLUT`; :meth:`PreparedLUT.run` measures and writes it.

    Raises:
        InputError: a setting out of range or not among its choices, or nothing to measure.
        LatencyError: an unknown or unavailable device, an existing ``out`` that cannot be
            read as a LUT or was measured with other settings.
        SpecError: a ``zoo`` entry that is not a spec file or zoo name.
        SpaceError: a space that cannot be read.
        LUTWriteError: ``out`` is a folder or its folder cannot be written."""
    check_protocol(threads, batch, warmup, reps, rounds)
    _count("--n", n, zero_ok=True)
    _count("--calibrate", calibrate, zero_ok=True)
    _count("--seed", seed, zero_ok=True)
    _choice("--statistic", statistic, _lat.STATISTICS)
    _choice("--amp", amp, _lat.AMP_DTYPES, none_ok=True)
    device = str(_lat.resolve_device(device or "cpu"))
    specs = [s if isinstance(s, NetworkSpec) else resolve_spec(s) for s in zoo]
    specs += sample_networks(spaces, n, cifar, seed)
    if not specs:
        raise InputError("nothing to measure: give --n > 0 or --zoo NAME")
    out = os.fspath(out)
    _check_writable(out)
    existing = None
    if os.path.exists(out):
        existing = _lat.LUT.load(out)
        have = (existing.device, existing.threads, existing.batch, existing.channels_last,
                existing.statistic, existing.amp)
        if have != (device, threads, batch, channels_last, statistic, amp):
            raise _lat.LatencyError(
                f"{out} was measured with device={existing.device} threads={existing.threads} "
                f"batch={existing.batch} channels_last={existing.channels_last} "
                f"statistic={existing.statistic} amp={existing.amp or 'none'}; use another --out")
    return PreparedLUT(out, specs, device, threads, batch, channels_last, warmup, reps, rounds,
                       amp, calibrate, statistic, existing)


def _check_writable(out: str) -> None:
    """Refuse an ``out`` whose folder the OS will not let us write, before anything is measured
    (:class:`LUTWriteError`, the one line of a failed write): a temporary file is made in the
    folder, where the atomic write will make its own, and removed at once."""
    import tempfile
    if os.path.isdir(out):
        raise LUTWriteError(f"{out}: cannot write LUT (Is a directory)")
    try:
        with tempfile.NamedTemporaryFile(dir=os.path.dirname(os.path.abspath(out)),
                                         prefix=".lut-check-"):
            pass
    except OSError as e:
        raise _write_error(out, e) from e


def build_lut_file(out: str | os.PathLike, progress: Callable[[int, int, float], None] | None
                   = None, **kw) -> LUTBuild:
    """:func:`prepare_lut` (``**kw``) and :meth:`PreparedLUT.run` in one call.

    Args:
        out: the LUT file to write.
        progress: called as ``progress(i, n, seconds)`` after each network measured.
        **kw (Any): the keywords of :func:`prepare_lut`.

    Returns:
        The :class:`LUTBuild`: the file written, its LUT, networks and entries measured, seconds.

    Raises:
        InputError: a refused setting (:func:`prepare_lut`).
        LatencyError: a device or existing LUT refused (:func:`prepare_lut`).
        SpecError: a ``zoo`` entry that cannot be read.
        SpaceError: a space that cannot be read.
        LUTWriteError: ``out`` cannot be written."""
    return prepare_lut(out, **kw).run(progress)
