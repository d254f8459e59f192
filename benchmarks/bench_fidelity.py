"""Fidelity of the proxies: how well each score ranks architectures like a much longer training.

Samples ``--n`` architectures of one space whose MACs at the space's target lie within
``--tolerance`` of ``--budget`` (Optuna RandomSampler, seed 0), trains the CIFAR-10 form of each
with the proxy budget and with a reference budget of ``--reference-x`` times as many training
images (more epochs on more data), all scored on the same held-out validation images, and prints
the Spearman rank correlation with the reference accuracy of: the proxy training's validation
accuracy, each zero-cost proxy, MACs and params. Per-architecture results go to ``--csv``.

    python benchmarks/bench_fidelity.py --space igcv3 --budget 150M --n 20          # CPU defaults
    python benchmarks/bench_fidelity.py --space mixed --budget 80M --n 20 --scale small  # reduced
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import replace

import optuna
import pandas as pd
import torch
from optuna.samplers import RandomSampler

from igcv_nas.cost import count
from igcv_nas.data import load_splits
from igcv_nas.proxy import ProxyBudget, default_budget, evaluate
from igcv_nas.space import load_space, to_cifar
from igcv_nas.units import parse_count


def sample_near(space, budget: int, tol: float, n: int, seed: int):
    study = optuna.create_study(sampler=RandomSampler(seed=seed))
    picked, tries = [], 0
    while len(picked) < n:
        tries += 1
        if tries > 200_000:
            raise SystemExit(f"fewer than {n} architectures within {tol:.0%} of {budget:,} MACs")
        trial = study.ask()
        spec = space.sample(trial)
        if abs(count(spec).macs - budget) <= tol * budget and spec.arch_id not in {s.arch_id for s in picked}:
            picked.append(spec)
    return picked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="igcv3")
    ap.add_argument("--budget", default="150M", help="MACs at the space's target")
    ap.add_argument("--tolerance", type=float, default=0.2)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--scale", choices=["default", "small"], default="default",
                    help="small: 1 epoch of the default budget as the proxy (CPU-friendly)")
    ap.add_argument("--reference-x", type=int, default=10, help="reference budget / proxy budget")
    ap.add_argument("--csv", default="fidelity.csv")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report", metavar="CSV", help="only print the table of an earlier run's CSV")
    args = ap.parse_args()
    if args.report:
        report(pd.read_csv(args.report))
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    proxy = default_budget(args.device, mode="both")
    if args.scale == "small":
        proxy = replace(proxy, train=replace(proxy.train, epochs=1))
    t = proxy.train
    # reference: x times the training images -- x/2 times the data (capped at all of it) for
    # the rest of the factor in epochs
    frac = min(1.0, t.train_fraction * max(1, args.reference_x // 2))
    epochs = round(t.epochs * args.reference_x * t.train_fraction / frac)
    ref = ProxyBudget(mode="training", train=replace(t, train_fraction=frac, epochs=epochs),
                      val_size=proxy.val_size)

    space = load_space(args.space)
    budget = parse_count(args.budget, "--budget")
    specs = sample_near(space, budget, args.tolerance, args.n, args.seed)
    splits = load_splits("cifar10", args.data_dir, val_size=5000, seed=0)
    dev = torch.device(t.device)
    print(f"# bench_fidelity: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, device {dev}")
    print(f"# space {args.space}, {args.n} architectures with MACs within {args.tolerance:.0%} of "
          f"{budget:,} at {space.target.input_size}px; trained as CIFAR-10 forms")
    print(f"# proxy: {t.epochs} epochs x {t.train_fraction:.3f} of 45,000 images; reference: "
          f"{ref.train.epochs} epochs x {frac:.3f} ({ref.train.epochs * frac / (t.epochs * t.train_fraction):.1f}x "
          f"the images); both scored on the same {proxy.val_size} validation images")
    rows = []
    for i, spec in enumerate(specs):
        cifar = to_cifar(spec, num_classes=10)
        c = count(spec)
        t0 = time.perf_counter()
        p = evaluate(cifar, splits, proxy)
        t1 = time.perf_counter()
        r = evaluate(cifar, splits, ref)
        t2 = time.perf_counter()
        rows.append({"arch_id": spec.arch_id, "macs": c.macs, "params": c.params,
                     "proxy_acc": p["val_acc"], **{k: v for k, v in p.items() if k.startswith("zc_")},
                     "reference_acc": r["val_acc"], "proxy_s": t1 - t0, "reference_s": t2 - t1})
        print(f"  {i + 1:>2}/{len(specs)} {spec.arch_id} {c.macs / 1e6:6.1f}M  proxy {p['val_acc']:.3f} "
              f"({t1 - t0:5.0f}s)  reference {r['val_acc']:.3f} ({t2 - t1:5.0f}s)", flush=True)
        pd.DataFrame(rows).to_csv(args.csv, index=False)
    report(pd.DataFrame(rows))


def report(df: pd.DataFrame) -> None:
    scores = ["proxy_acc"] + [c for c in df.columns if c.startswith("zc_")] + ["macs", "params"]
    print(f"\n{'score':<16}{'Spearman rho vs reference':>28}")
    print("-" * 44)
    for s in scores:
        # Spearman = Pearson on ranks (average ranks for ties); pandas' own needs scipy
        rho = df[s].rank().corr(df["reference_acc"].rank())
        print(f"{s:<16}{rho:>28.3f}")
    print(f"# mean time per architecture: proxy {df.proxy_s.mean():.0f}s, reference {df.reference_s.mean():.0f}s; "
          f"reference accuracy {df.reference_acc.min():.3f}..{df.reference_acc.max():.3f}")


if __name__ == "__main__":
    main()
