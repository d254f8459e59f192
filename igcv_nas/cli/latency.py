"""``igcv-latency``: measured and predicted latency of a network on a device.

    igcv-latency SPEC.json | ZOO_NAME [--lut FILE] [--device cpu] [--threads T] [--batch B]
                 [--channels-last] [--amp fp16|bf16] [--warmup W] [--reps R] [--rounds K]
                 [--no-measure] [--json]
    igcv-latency build-lut --device cpu --out FILE [--space NAME ...] [--zoo NAME ...] [--n N]
                 [--cifar] [--seed S] [--threads T] [--batch B] [--channels-last] [--amp D]
                 [--warmup W] [--reps R] [--rounds K] [--calibrate K] [--statistic S]

The first form measures the network (median, p90, fastest pass and the fastest of the
per-round medians, with the rounds' spread as its repeatability) and, with ``--lut``, prints
the latency predicted from the lookup table twice: the corrected sum of entries (pieces the
table lacks are measured on its device and added to the file) and the learned predictor.
``build-lut`` samples ``--n`` random architectures from each ``--space`` (default: every
shipped space), adds the ``--zoo`` networks, measures every distinct stem, block and head of
them once and fits the correction on ``--calibrate`` whole networks; an existing ``--out`` file
with the same settings is extended, not re-measured. Exit code 0 on success, 2 with one line on
stderr for bad input; anything else is a bug: one line saying so, exit 1 (the traceback with
``--debug``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .. import latency as _lat
from ..errors import IGCVError, InputError
from ..spec import NetworkSpec, SpecError
from ._common import OneLineParser, fail, resolve_spec, run_cli

PROG = "igcv-latency"
USAGE = ("igcv-latency SPEC.json|ZOO_NAME [--lut FILE] [options]\n"
         "       igcv-latency build-lut --out FILE [--space NAME ...] [--n N] [options]")


def _positive(flag: str, v: int | None, zero_ok: bool = False) -> None:
    if v is not None and (v < 0 if zero_ok else v <= 0):
        kind = "non-negative" if zero_ok else "positive"
        raise InputError(f"{flag} {v} must be a {kind} integer")


def _check_common(args: argparse.Namespace) -> None:
    _positive("--threads", args.threads)
    _positive("--batch", args.batch)
    _positive("--reps", args.reps)
    _positive("--warmup", args.warmup, zero_ok=True)
    _positive("--rounds", args.rounds)


def _common(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--device", default=None,
                    help="cpu, cuda or cuda:N (default cpu; with --lut: the LUT's)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    ap.add_argument("--channels-last", action="store_true", help="channels_last model and input")
    ap.add_argument("--warmup", type=int, default=5, help="untimed passes first (default 5)")
    ap.add_argument("--reps", type=int, default=20, help="timed passes (default 20)")
    ap.add_argument("--rounds", type=int, default=4,
                    help="rounds the timed passes are cut into; the spread of the per-round "
                         "medians is the repeatability figure (default 4)")
    ap.add_argument("--amp", default=None, choices=_lat.AMP_DTYPES,
                    help="run under torch.autocast with this dtype (default: fp32)")


def _build_lut(argv: list[str]) -> int:
    ap = OneLineParser(prog=f"{PROG} build-lut",
                                 description="Measure a per-block latency lookup table.")
    ap.add_argument("--out", required=True, help="LUT JSON file to write (extended if it exists)")
    ap.add_argument("--space", action="append", default=None,
                    help="search space to sample (repeatable; default: every shipped space)")
    ap.add_argument("--zoo", action="append", default=[],
                    help="zoo network to include (repeatable)")
    ap.add_argument("--n", type=int, default=20,
                    help="architectures sampled per space (default 20)")
    ap.add_argument("--cifar", action="store_true", help="sample the CIFAR form (32x32)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    ap.add_argument("--calibrate", type=int, default=6,
                    help="whole networks measured to fit the correction (default 6)")
    ap.add_argument("--statistic", default="median", choices=_lat.STATISTICS,
                    help="what the LUT predicts: the median pass (default), the fastest pass "
                         "(min) or the fastest per-round median (rounds); the last two are "
                         "steadier on a shared machine")
    _common(ap)
    args = ap.parse_args(argv)
    try:
        _check_common(args)
        _positive("--n", args.n, zero_ok=True)
        _positive("--calibrate", args.calibrate, zero_ok=True)
        args.device = str(_lat.resolve_device(args.device or "cpu"))
    except IGCVError as e:
        return fail(PROG, str(e))
    from ..space import SpaceError, available_spaces, load_space
    specs: list[NetworkSpec] = []
    try:
        for name in args.zoo:
            specs.append(resolve_spec(name))
        if args.n:
            import optuna
            from optuna.samplers import RandomSampler
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            for name in args.space or available_spaces():
                sp = load_space(name)
                study = optuna.create_study(sampler=RandomSampler(seed=args.seed))
                specs += [sp.sample(study.ask(), cifar=args.cifar) for _ in range(args.n)]
    except (SpecError, SpaceError) as e:
        return fail(PROG, str(e))
    if not specs:
        return fail(PROG, "nothing to measure: give --n > 0 or --zoo NAME")
    try:
        lut = None
        if os.path.exists(args.out):
            lut = _lat.LUT.load(args.out)
            want = (args.threads, args.batch, args.channels_last, args.statistic, args.amp)
            if (lut.threads, lut.batch, lut.channels_last, lut.statistic, lut.amp) != want or \
                    lut.device != args.device:
                return fail(PROG, f"{args.out} was measured with device={lut.device} "
                                  f"threads={lut.threads} batch={lut.batch} "
                                  f"channels_last={lut.channels_last} statistic={lut.statistic} "
                                  f"amp={lut.amp or 'none'}; use another --out")
        before = len(lut) if lut else 0
        t0 = time.perf_counter()
        def progress(i: int, n: int) -> None:  # measuring takes about 5 s a network
            print(f"{PROG}: measured {i}/{n} networks ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr, flush=True)

        lut = _lat.build_lut(specs, args.device, args.threads, args.batch, args.channels_last,
                             args.warmup, args.reps, args.calibrate, lut=lut,
                             statistic=args.statistic, progress=progress, rounds=args.rounds,
                             amp=args.amp)
        lut.save(args.out)
    except _lat.LatencyError as e:
        return fail(PROG, str(e))
    except OSError as e:
        return fail(PROG, f"{args.out}: cannot write LUT ({e.strerror})")
    c = lut.correction
    print(f"{args.out}: {len(lut)} entries ({len(lut) - before} measured now) from "
          f"{len(specs)} networks on {lut.device} ({lut.device_name}), threads {lut.threads}, "
          f"batch {lut.batch}, {'channels_last' if lut.channels_last else 'NCHW'}, "
          f"{lut.amp or 'fp32'}, "
          f"{lut.statistic} pass; "
          f"{time.perf_counter() - t0:.1f} s; correction: {c['scale']:.4f} x sum "
          f"{c['offset_ms']:+.3f} ms ({c['points']} networks)")
    return 0


def _measure(argv: list[str]) -> int:
    ap = OneLineParser(prog=PROG, usage=USAGE, description=__doc__.split("\n\n")[2])
    ap.add_argument("source", help="a spec JSON file or a zoo name (e.g. mobilenet_v2_0.5_cifar)")
    ap.add_argument("--lut", default=None, help="LUT file: also print the predicted latency")
    ap.add_argument("--no-measure", action="store_true", help="only predict (needs --lut)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    _common(ap)
    args = ap.parse_args(argv)
    try:
        _check_common(args)
        if args.no_measure and not args.lut:
            raise InputError("--no-measure needs --lut FILE")
        spec = resolve_spec(args.source)
    except IGCVError as e:
        return fail(PROG, str(e))
    from ..validation import check
    rep = check(spec)
    if not rep.ok:
        return fail(PROG, f"{args.source}: {len(rep.violations)} violation(s): "
                          + "; ".join(str(v) for v in rep.violations))
    out: dict = {"name": spec.name, "arch_id": spec.arch_id, "input_size": spec.input_size}
    try:
        if args.lut:
            lut = _lat.LUT.load(args.lut)
            if args.device is not None and str(_lat.resolve_device(args.device)) != lut.device:
                raise _lat.LatencyError(f"{args.lut} was measured on {lut.device}, not on "
                                        f"{args.device}")
            n0 = len(lut)
            out["predicted_ms"] = round(lut.predict(spec, measure_missing=not args.no_measure), 4)
            try:
                out["predicted_learned_ms"] = round(lut.predict(spec, method="learned"), 4)
            except ImportError as e:
                out["learned_unavailable"] = f"{e.name or e}: pip install scikit-learn"
            out["lut"] = {"path": args.lut, "device": lut.device, "threads": lut.threads,
                          "statistic": lut.statistic, "amp": lut.amp,
                          "batch": lut.batch, "channels_last": lut.channels_last,
                          "measured_now": len(lut) - n0}
            if len(lut) > n0:
                lut.save(args.lut)
            device, threads, batch, cl = lut.device, lut.threads, lut.batch, lut.channels_last
            stat, amp, rounds = lut.statistic, lut.amp, lut.rounds
        else:
            stat, amp, rounds = "median", args.amp, args.rounds
            device, threads, batch, cl = (args.device or "cpu", args.threads, args.batch,
                                          args.channels_last)
        if not args.no_measure:
            m = _lat.measure(spec, device, threads, batch, cl, args.warmup, args.reps,
                             rounds=rounds, amp=amp)
            out["measured"] = m.as_dict()
            for k, e in (("predicted_ms", "error"), ("predicted_learned_ms", "error_learned")):
                if k in out:
                    out[e] = round(out[k] / m.value(stat) - 1, 4)
    except _lat.LatencyError as e:
        return fail(PROG, str(e))
    except OSError as e:
        return fail(PROG, f"{args.lut}: cannot write LUT ({e.strerror})")
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    label = spec.name or spec.arch_id
    if "measured" in out:
        m = out["measured"]
        n = m["threads"]
        thr = "" if n is None else f" ({n} thread{'' if n == 1 else 's'})"
        print(f"{label} @ {spec.input_size}x{spec.input_size}, batch {m['batch']}, "
              f"{'channels_last' if m['channels_last'] else 'NCHW'}, {m['amp'] or 'fp32'} on "
              f"{m['device']}{thr}: measured "
              f"median {m['median_ms']:.3f} ms, p90 {m['p90_ms']:.3f} ms, "
              f"fastest {m['min_ms']:.3f} ms over {m['reps']} reps; fastest round median "
              f"{m['stable_ms']:.3f} ms, spread between the {m['rounds']} rounds "
              + ("n/a (one round)" if m["spread"] is None else f"{m['spread']:.1%}"))
    if "predicted_ms" in out:
        stat = out["lut"]["statistic"]
        err = f" ({out['error']:+.1%} vs measured {stat})" if "error" in out else ""
        print(f"{label}: predicted {out['predicted_ms']:.3f} ms ({stat} pass) by the LUT sum "
              f"from {args.lut}{err}")
        if "predicted_learned_ms" in out:
            e = out.get("error_learned")
            err = f" ({e:+.1%} vs measured {stat})" if e is not None else ""
            print(f"{label}: predicted {out['predicted_learned_ms']:.3f} ms ({stat} pass) by the "
                  f"learned predictor{err}")
        else:
            print(f"{label}: learned predictor unavailable ({out['learned_unavailable']})")
    return 0


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "build-lut":
        return _build_lut(argv[1:])
    return _measure(argv)


def main(argv: list[str] | None = None) -> int:
    return run_cli(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
