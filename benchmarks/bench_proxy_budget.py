"""Wall time of one trial under the default CPU proxy budget, on architectures of the default
search space near a MACs budget: what a CPU search costs per trial.

    python benchmarks/bench_proxy_budget.py --space igcv3 --budget 300M --n 5
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import optuna
import torch
from optuna.samplers import RandomSampler

from igcv_nas.arch.cost import count
from igcv_nas.evaluate.data import load_splits
from igcv_nas.evaluate.proxy import default_budget, evaluate
from igcv_nas.arch.space import load_space, to_cifar
from igcv_nas.units import parse_count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="igcv3")
    ap.add_argument("--budget", default="300M")
    ap.add_argument("--tolerance", type=float, default=0.2)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    budget = parse_count(args.budget, "--budget")
    space = load_space(args.space)
    proxy = default_budget(args.device)
    splits = load_splits("cifar10", args.data_dir, val_size=5000, seed=0)
    t = proxy.train
    print(f"# bench_proxy_budget: {platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {t.device}")
    print(f"# default budget: {t.epochs} epochs x {t.train_fraction:.3f} of 45,000 images, batch "
          f"{t.batch_size}, channels_last={t.channels_last}, {proxy.val_size} validation images")
    print(f"{'arch':<18}{'MACs@224':>10}{'MACs@32':>10}{'img/s':>8}{'val acc':>9}{'trial s':>9}")
    study = optuna.create_study(sampler=RandomSampler(seed=0))
    done, times = 0, []
    while done < args.n:
        spec = space.sample(study.ask())
        m = count(spec).macs
        if abs(m - budget) > args.tolerance * budget:
            continue
        cifar = to_cifar(spec, 10)
        t0 = time.perf_counter()
        r = evaluate(cifar, splits, proxy)
        dt = time.perf_counter() - t0
        times.append(dt)
        done += 1
        print(f"{spec.arch_id:<18}{m / 1e6:>9.1f}M{count(cifar).macs / 1e6:>9.1f}M"
              f"{r['images_per_s']:>8.1f}"
              f"{r['val_acc']:>9.3f}{dt:>9.1f}", flush=True)
    mean = sum(times) / len(times)
    print(f"# mean {mean:.0f} s per trial -> a 20-trial search: about {20 * mean / 60:.0f} minutes "
          "one trial at a time")


if __name__ == "__main__":
    main()
