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
import sys

from ..evaluate import latency as _lat
from ..evaluate.latency_run import LUTBuild, latency_report, prepare_lut
from ._common import OneLineParser, run_cli

PROG = "igcv-latency"
USAGE = ("igcv-latency SPEC.json|ZOO_NAME [--lut FILE] [options]\n"
         "       igcv-latency build-lut --out FILE [--space NAME ...] [--n N] [options]")


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


def _protocol(args: argparse.Namespace) -> dict:
    return {"device": args.device, "threads": args.threads, "batch": args.batch,
            "channels_last": args.channels_last, "warmup": args.warmup, "reps": args.reps,
            "rounds": args.rounds, "amp": args.amp}


def _build_lut(argv: list[str]) -> int:
    """Parse -> :func:`igcv_nas.evaluate.latency_run.prepare_lut` -> run -> print."""
    ap = OneLineParser(prog=f"{PROG} build-lut",
                       description="Measure a per-block latency lookup table.")
    ap.add_argument("--out", required=True, help="LUT JSON file to write (extended if it exists)")
    ap.add_argument("--space", action="append", default=None,
                    help="search space to sample (repeatable; default: every shipped space)")
    ap.add_argument("--zoo", action="append", default=[],
                    help="zoo network to include (repeatable; default none)")
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
    prep = prepare_lut(args.out, spaces=args.space, zoo=args.zoo, n=args.n, cifar=args.cifar,
                       seed=args.seed, calibrate=args.calibrate, statistic=args.statistic,
                       **_protocol(args))

    def progress(i: int, n: int, seconds: float) -> None:
        print(f"{PROG}: measured {i}/{n} networks ({seconds:.0f} s)", file=sys.stderr,
              flush=True)

    _print_build(prep.run(progress))
    return 0


def _print_build(b: LUTBuild) -> None:
    lut, c = b.lut, b.lut.correction
    print(f"{b.out}: {len(lut)} entries ({b.measured_now} measured now) from "
          f"{b.networks} networks on {lut.device} ({lut.device_name}), threads {lut.threads}, "
          f"batch {lut.batch}, {'channels_last' if lut.channels_last else 'NCHW'}, "
          f"{lut.amp or 'fp32'}, "
          f"{lut.statistic} pass; "
          f"{b.seconds:.1f} s; correction: {c['scale']:.4f} x sum "
          f"{c['offset_ms']:+.3f} ms ({c['points']} networks)")


def _measure(argv: list[str]) -> int:
    """Parse -> :func:`igcv_nas.evaluate.latency_run.latency_report` -> print."""
    ap = OneLineParser(prog=PROG, usage=USAGE, description=__doc__.split("\n\n")[2])
    ap.add_argument("source", help="a spec JSON file or a zoo name (e.g. mobilenet_v2_0.5_cifar)")
    ap.add_argument("--lut", default=None, help="LUT file: also print the predicted latency "
                                                "(default: none, measure only)")
    ap.add_argument("--no-measure", action="store_true", help="only predict (needs --lut)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    _common(ap)
    args = ap.parse_args(argv)
    out = latency_report(args.source, lut=args.lut, measure=not args.no_measure,
                         **_protocol(args))
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        _print_report(out)
    return 0


def _print_report(out: dict) -> None:
    label = out["name"] or out["arch_id"]
    size = out["input_size"]
    if "measured" in out:
        m = out["measured"]
        n = m["threads"]
        thr = "" if n is None else f" ({n} thread{'' if n == 1 else 's'})"
        print(f"{label} @ {size}x{size}, batch {m['batch']}, "
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
              f"from {out['lut']['path']}{err}")
        if "predicted_learned_ms" in out:
            e = out.get("error_learned")
            err = f" ({e:+.1%} vs measured {stat})" if e is not None else ""
            print(f"{label}: predicted {out['predicted_learned_ms']:.3f} ms ({stat} pass) by the "
                  f"learned predictor{err}")
        else:
            print(f"{label}: learned predictor unavailable ({out['learned_unavailable']})")


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "build-lut":
        return _build_lut(argv[1:])
    return _measure(argv)


def main(argv: list[str] | None = None) -> int:
    return run_cli(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
