"""Architectures costed per second: igcv_nas.arch.cost against fvcore's FlopCountAnalysis.

For each shipped space: sample ``--n`` architectures (Optuna RandomSampler, seed 0; sampling and
spec construction are not timed), then time ``cost.count`` over all of them on one thread, and
fvcore (build the model, trace, count) over the first ``--n-fvcore`` of them. Every fvcore
count is checked equal to ours (conv + linear) -- the run aborts otherwise.

    python benchmarks/bench_cost.py            # target: >= 10,000 architectures/s on one core
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import optuna
import torch
from optuna.samplers import RandomSampler

from igcv_nas.arch import zoo
from igcv_nas.nn.build import build_model
from igcv_nas.arch.cost import count
from igcv_nas.artifacts.crosscheck import fvcore_macs
from igcv_nas.arch.space import available_spaces, load_space


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def rate(fn, items) -> float:
    t0 = time.perf_counter()
    for it in items:
        fn(it)
    return len(items) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5000, help="architectures per space for cost.count")
    ap.add_argument("--n-fvcore", type=int, default=20, help="architectures per space for fvcore")
    args = ap.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"# bench_cost: {cpu_name()}, {os.cpu_count()} cores (1 thread used), python "
          f"{platform.python_version()}, torch {torch.__version__}")
    header = (f"{'space':<16}{'blocks':>7}{'MACs (mean)':>13}{'igcv_nas archs/s':>18}"
              f"{'fvcore archs/s':>16}{'ratio':>9}")
    print(header)
    print("-" * len(header))
    rows = []
    for name in available_spaces():
        sp = load_space(name)
        study = optuna.create_study(sampler=RandomSampler(seed=0))
        specs = [sp.sample(study.ask()) for _ in range(args.n)]
        rows.append((name, specs))
    zoo_names = ("mobilenet_v2", "mobilenet_v2_0.5", "igcv3_d", "igcv3_d_0.7", "mobilenet_v1",
                 "igcv2", "igcv2_0.5", "mobilenet_v2_1.4")
    rows.append(("zoo (8 nets)", [zoo.get(n) for n in zoo_names]))
    for name, specs in rows:
        ours = rate(count, specs)
        sub = specs[: args.n_fvcore]

        def fv(spec):
            m = fvcore_macs(build_model(spec), spec.input_size)
            if m != count(spec).macs:
                raise SystemExit(f"MISMATCH on {spec.arch_id}: fvcore {m} != "
                                 f"ours {count(spec).macs}")

        theirs = rate(fv, sub)
        n_blocks = sum(sum(len(s) for s in spec.stages) for spec in specs) / len(specs)
        mean_macs = sum(count(s).macs for s in specs) / len(specs)
        print(f"{name:<16}{n_blocks:>7.1f}{mean_macs / 1e6:>12.1f}M{ours:>18,.0f}{theirs:>16,.2f}"
              f"{ours / theirs:>8,.0f}x")
    print(f"# fvcore counts (conv + linear) equal ours on all {args.n_fvcore} x {len(rows)} "
          "architectures checked")


if __name__ == "__main__":
    main()
