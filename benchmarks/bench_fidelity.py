"""Fidelity of the proxies: how well each score ranks architectures like a much longer training.

Protocol (issue 11):

* ``--n`` architectures (>= 40) drawn uniformly (every choice uniform, ``--seed``) from one space,
  distinct, with MACs at the space's target inside ``[lo * B, B]`` (default lo = 0.8);
  trained as their CIFAR-10 forms.
* The 45,000 training images are split once into two disjoint halves: every proxy trains on
  images of half A and is scored on the 5,000 held-out validation images; the reference trains
  on half B (10x the proxy's images: 13,500 images x 2 epochs, batch 64) with other initial
  weights and another data order, and is scored on the 10,000 test images. Nothing is shared
  between a proxy and its reference but the architecture.
* Proxy budgets (``PROXIES``), all 2,700 training images: ``e2x1350`` (the previous CPU
  default: 1,350 images x 2 epochs, batch 32), ``e1x2700`` (2,700 images seen once, batch 32:
  same 84 steps, more images) and ``e1x2700b64`` (batch 64, 42 steps). Each gives three scores:
  validation accuracy, validation loss and TSE (sum of training losses, Ru et al. 2021).
  Zero-cost proxies, MACs, params and depth (number of blocks) are scored too.
* Noise floor: the first ``--noise-archs`` (10) architectures are trained with ``--noise-seeds``
  (3) seeds for every proxy and for the reference; the seed-to-seed Spearman rho over them (mean
  over seed pairs, bootstrap 95% interval over the architectures), beside each proxy's rho
  against the reference on the same architectures (one seed each, and seed means).
* Table: Spearman rho and Kendall tau-b of every score against the reference with bootstrap 95%
  intervals (``BOOTSTRAP_REPS`` = 2,000 resamples of the architectures for rho,
  ``KENDALL_REPS`` = 500 for tau), partial Spearman given MACs and depth, and
  precision of the top 5 (how many of the score's top 5 are among the reference's top 5).

Every finished training is appended to ``--csv`` (one row: architecture, role, seeds, scores)
and skipped when the benchmark is started again, so it can run in the background, be stopped
and continued (``setsid nohup ... &``). ``--shard I/N`` splits the missing trainings between N
processes started together on the same CSV by architecture (index + seed modulo N, so a
reference and its proxies stay in one process); rows are appended whole, one write each.

    OMP_NUM_THREADS=2 python benchmarks/bench_fidelity.py --space mixed --budget 80M --n 40
    OMP_NUM_THREADS=1 python benchmarks/bench_fidelity.py --threads 1 --shard 1/2   # beside 0/2
    python benchmarks/bench_fidelity.py --report benchmarks/results/fidelity_mixed_80M_cpu.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from igcv_nas.arch.cost import count
from igcv_nas.evaluate.data import Splits, load_splits
from igcv_nas.evaluate.proxy import ProxyBudget, evaluate, zero_cost_scores
from igcv_nas.arch.space import load_space, to_cifar
from igcv_nas.evaluate.train import TrainConfig
from igcv_nas.units import parse_count

HALF = 22_500  # images in each half of the 45,000-image training split
_BASE = TrainConfig(
    epochs=1,
    batch_size=32,
    lr=0.05,
    warmup=0.3,
    label_smoothing=0.0,
    channels_last=True,
    device="cpu",
    eval_each_epoch=False,
)
PROXIES = {
    "e2x1350": replace(_BASE, epochs=2, train_fraction=1350 / HALF),
    "e1x2700": replace(_BASE, train_fraction=2700 / HALF),
    "e1x2700b64": replace(_BASE, batch_size=64, lr=0.1, train_fraction=2700 / HALF),
}
REFERENCE = replace(
    _BASE,
    epochs=2,
    batch_size=64,
    lr=0.1,
    warmup=0.15,
    label_smoothing=0.1,
    train_fraction=13_500 / HALF,
)
PROXY_SEED, REF_SEED = 0, 1000  # seed s: initialisation s, data order s (+1 per noise seed)
DEFAULT_PROXY = "e1x2700"  # igcv_nas.evaluate.proxy.CPU_BUDGET's recipe (2,700 images seen once)
FIELDS = [
    "arch",
    "arch_id",
    "macs",
    "params",
    "depth",
    "role",
    "seed",
    "val_acc",
    "val_loss",
    "tse",
    "seconds",
]


class Uniform:
    """A trial-like object answering every choice uniformly at random (the distribution of
    Optuna's RandomSampler, without a study that grows with every draw)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def suggest_categorical(self, name: str, choices):
        return choices[int(self.rng.integers(len(choices)))]


def sample_band(space, lo: int, hi: int, n: int, seed: int):
    """``n`` distinct architectures drawn uniformly from ``space`` with MACs in [lo, hi]."""
    trial = Uniform(seed)
    picked, ids = [], set()
    for _ in range(500_000):
        spec = space.sample(trial)
        m = count(spec).macs
        if lo <= m <= hi and spec.arch_id not in ids:
            picked.append(spec)
            ids.add(spec.arch_id)
            if len(picked) == n:
                return picked
    raise SystemExit(f"fewer than {n} architectures with MACs in [{lo:,}, {hi:,}]")


def halves(splits: Splits) -> tuple[Splits, Splits]:
    """(proxy splits: half A, scored on val; reference splits: half B, scored on test)."""
    perm = np.random.default_rng(99).permutation(len(splits.train))
    a, b = (
        splits.train.subset(np.sort(perm[:HALF])),
        splits.train.subset(np.sort(perm[HALF : 2 * HALF])),
    )
    return replace(splits, train=a), replace(splits, train=b, val=splits.test)


def done_keys(path: Path) -> set[tuple[str, str, int]]:
    if not path.is_file():
        return set()
    return {(r["arch_id"], r["role"], int(r["seed"])) for r in csv.DictReader(path.open())}


def append(path: Path, row: dict) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        w.writerow(row)
        f.flush()
        os.fsync(f.fileno())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="mixed")
    ap.add_argument("--budget", default="80M", help="MACs budget B at the space's target")
    ap.add_argument(
        "--band", type=float, default=0.8, help="lower end of the band as a fraction of B"
    )
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--noise-archs", type=int, default=10)
    ap.add_argument("--noise-seeds", type=int, default=3)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument(
        "--csv", default=None, help="default benchmarks/results/fidelity_<space>_<budget>_cpu.csv"
    )
    ap.add_argument("--seed", type=int, default=0, help="architecture sampling seed")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--report", metavar="CSV", help="only print the table of an earlier run's CSV")
    ap.add_argument(
        "--shard",
        default="0/1",
        metavar="I/N",
        help="train only the missing rows of the architectures (and noise seeds) whose index + "
        "seed is I modulo N, so N processes started together share the work and append to the "
        "same CSV (default 0/1: all of it)",
    )
    args = ap.parse_args()
    try:
        shard, shards = (int(x) for x in args.shard.split("/"))
        if not 0 <= shard < shards:
            raise ValueError
    except ValueError:
        ap.error(f"--shard {args.shard!r}: expected I/N with 0 <= I < N, e.g. 0/2")
    if args.report:
        report(pd.read_csv(args.report), Path(args.report).with_suffix(".zc.csv"))
        return
    torch.set_num_threads(args.threads)
    out = Path(args.csv or f"benchmarks/results/fidelity_{args.space}_{args.budget}_cpu.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    space = load_space(args.space)
    b = parse_count(args.budget, "--budget")
    specs = sample_band(space, int(args.band * b), b, args.n, args.seed)
    splits = load_splits("cifar10", args.data_dir, val_size=5000, seed=0, download_ok=False)
    proxy_splits, ref_splits = halves(splits)
    print(
        f"# bench_fidelity: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{args.threads} threads, torch {torch.__version__}",
        flush=True,
    )
    print(
        f"# space {args.space}: {args.n} architectures, MACs in [{args.band:g}, 1] x {b:,} at "
        f"{space.target.input_size}px, trained as CIFAR-10 forms; rows -> {out}"
    )
    zc_path = out.with_suffix(".zc.csv")
    zc_done = set(pd.read_csv(zc_path).arch_id) if zc_path.is_file() else set()
    zc_budget = ProxyBudget(mode="zero-cost", train=replace(_BASE, train_fraction=1.0))
    for spec in specs:  # zero-cost scores first: seconds for all (shard 0 writes them)
        if spec.arch_id in zc_done or shard != 0:
            continue
        s = zero_cost_scores(to_cifar(spec, 10), proxy_splits, zc_budget, seed=PROXY_SEED)
        new = not zc_path.is_file()
        pd.DataFrame([{"arch_id": spec.arch_id, **s}]).to_csv(
            zc_path, mode="a", header=new, index=False
        )
    done = done_keys(out)
    jobs = []  # (arch index, role, seed): main rows of every architecture, then the noise seeds
    for i in range(len(specs)):
        jobs += [(i, f"proxy:{p}", PROXY_SEED) for p in PROXIES] + [(i, "reference", REF_SEED)]
    for k in range(1, args.noise_seeds):
        for i in range(min(args.noise_archs, len(specs))):
            jobs += [(i, f"proxy:{p}", PROXY_SEED + k) for p in PROXIES] + [
                (i, "reference", REF_SEED + k)
            ]
    todo = [j for j in jobs if (specs[j[0]].arch_id, j[1], j[2]) not in done]
    print(f"# {len(jobs) - len(todo)} of {len(jobs)} trainings already in the CSV", flush=True)
    if shards > 1:  # whole architectures (a reference is 10x its proxies): arch + seed mod N
        todo = [j for j in todo if (j[0] + j[2]) % shards == shard]
        print(f"# shard {shard}/{shards}: {len(todo)} of the missing trainings", flush=True)
    for n, (i, role, seed) in enumerate(todo):
        spec = specs[i]
        cfg = REFERENCE if role == "reference" else PROXIES[role.split(":")[1]]
        budget = ProxyBudget(
            mode="training", train=replace(cfg, seed=seed, data_seed=seed), val_size=10_000
        )
        t0 = time.perf_counter()
        s = evaluate(
            to_cifar(spec, 10), ref_splits if role == "reference" else proxy_splits, budget
        )
        c = count(spec)
        append(
            out,
            {
                "arch": i,
                "arch_id": spec.arch_id,
                "macs": c.macs,
                "params": c.params,
                "depth": sum(len(st) for st in spec.stages),
                "role": role,
                "seed": seed,
                "val_acc": s["val_acc"],
                "val_loss": s["val_loss"],
                "tse": s["tse"],
                "seconds": round(time.perf_counter() - t0, 2),
            },
        )
        print(
            f"  [{n + 1}/{len(todo)}] arch {i:>2} {role:<18} seed {seed:<5} acc {s['val_acc']:.4f} "
            f"loss {s['val_loss']:.3f} ({time.perf_counter() - t0:.0f}s)",
            flush=True,
        )
    report(pd.read_csv(out), zc_path)


# ---------------------------------------------------------------------------------------------
# statistics (numpy only)


def _ranks(x: np.ndarray) -> np.ndarray:
    return pd.Series(x).rank().to_numpy()


def spearman(x, y) -> float:
    return float(np.corrcoef(_ranks(np.asarray(x)), _ranks(np.asarray(y)))[0, 1])


def kendall(x, y) -> float:
    """Kendall tau-b."""
    x, y = np.asarray(x), np.asarray(y)
    dx, dy = np.sign(x[:, None] - x[None, :]), np.sign(y[:, None] - y[None, :])
    iu = np.triu_indices(len(x), 1)
    dx, dy = dx[iu], dy[iu]
    den = np.sqrt((dx != 0).sum() * (dy != 0).sum())
    return float((dx * dy).sum() / den) if den else float("nan")


def partial_spearman(x, y, covars: list) -> float:
    """Spearman of x and y with the ranks of the covariates regressed out of both."""
    z = np.column_stack([np.ones(len(x))] + [_ranks(np.asarray(c)) for c in covars])

    def resid(v):
        r = _ranks(np.asarray(v))
        return r - z @ np.linalg.lstsq(z, r, rcond=None)[0]

    return float(np.corrcoef(resid(x), resid(y))[0, 1])


def bootstrap(fn, x, y, reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    x, y, n, vals = np.asarray(x), np.asarray(y), len(x), []
    for _ in range(reps):
        i = rng.integers(0, n, n)
        if len(set(y[i])) > 1 and len(set(x[i])) > 1:
            vals.append(fn(x[i], y[i]))
    return float(np.nanpercentile(vals, 2.5)), float(np.nanpercentile(vals, 97.5))


def paired_rho_difference(a, b, y, reps: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """rho(a, y) - rho(b, y) and its bootstrap 95% interval, both scores resampled over the same
    architectures (paired: the architectures' spread in difficulty cancels)."""
    a, b, y = np.asarray(a), np.asarray(b), np.asarray(y)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(reps):
        i = rng.integers(0, len(y), len(y))
        if len(set(y[i])) > 1 and len(set(a[i])) > 1 and len(set(b[i])) > 1:
            vals.append(spearman(a[i], y[i]) - spearman(b[i], y[i]))
    d = spearman(a, y) - spearman(b, y)
    return d, float(np.nanpercentile(vals, 2.5)), float(np.nanpercentile(vals, 97.5))


def top_k_precision(x, y, k: int = 5) -> float:
    x, y = np.asarray(x), np.asarray(y)
    return len(set(np.argsort(-x)[:k]) & set(np.argsort(-y)[:k])) / k


BOOTSTRAP_REPS = 2000  # resamples of the architectures for a Spearman rho's interval
KENDALL_REPS = 500  # resamples for a Kendall tau's interval (O(n^2) per resample)


def summarize(df: pd.DataFrame, zc_path: Path | None = None) -> dict:
    """Everything :func:`report` prints, as data: ``n`` architectures with a reference, the
    reference's range, the noise floor, one row per score (Spearman rho and Kendall tau with
    bootstrap 95% intervals, partial rho given MACs and depth, top-5 precision), the paired rho
    differences against the CPU default's score, and the mean seconds per training by role."""
    ref = df[(df.role == "reference") & (df.seed == REF_SEED)].set_index("arch_id")
    main = df[df.seed == PROXY_SEED]
    table = pd.DataFrame(index=ref.index)
    table["reference"] = ref.val_acc
    for role, g in main[main.role.str.startswith("proxy:")].groupby("role"):
        g = g.set_index("arch_id")
        name = role.split(":")[1]
        table[f"{name} val_acc"] = g.val_acc
        table[f"{name} -val_loss"] = -g.val_loss
        table[f"{name} -tse"] = -g.tse
    if zc_path is not None and Path(zc_path).is_file():
        zc = pd.read_csv(zc_path).drop_duplicates("arch_id").set_index("arch_id")
        for c in zc.columns:
            table[c] = zc[c]
    for c in ("macs", "params", "depth"):
        table[c] = ref[c]
    table = table.dropna(subset=["reference"])
    out: dict = {"n": len(table), "ref_min": float(table.reference.min()),
                 "ref_max": float(table.reference.max()), "noise": noise_floor(df),
                 "rows": [], "paired": [], "trainings": len(df)}
    for col in table.columns.drop("reference"):
        cols = list(dict.fromkeys([col, "reference", "macs", "depth"]))  # col may be macs/depth
        sub = table[cols].replace([np.inf, -np.inf], np.nan).dropna()
        if len(sub) < 5:
            continue
        x, yy = sub[col].to_numpy(), sub.reference.to_numpy()
        rlo, rhi = bootstrap(spearman, x, yy, reps=BOOTSTRAP_REPS)
        tlo, thi = bootstrap(kendall, x, yy, reps=KENDALL_REPS)
        part = (
            partial_spearman(x, yy, [sub.macs, sub.depth])
            if col not in ("macs", "depth")
            else float("nan")
        )
        out["rows"].append({"score": col, "rho": spearman(x, yy), "rho_lo": rlo, "rho_hi": rhi,
                            "tau": kendall(x, yy), "tau_lo": tlo, "tau_hi": thi,
                            "partial": part, "top5": top_k_precision(x, yy), "n": len(sub)})
    base = f"{DEFAULT_PROXY} val_acc"  # the CPU default's score, which every budget is held to
    out["base"] = base if base in table.columns else None
    if out["base"]:
        for col in [c for c in table.columns if " " in c and c != base]:
            sub = table[[col, base, "reference"]].replace([np.inf, -np.inf], np.nan).dropna()
            if len(sub) < 5:
                continue
            d, lo, hi = paired_rho_difference(sub[col], sub[base], sub.reference,
                                              reps=BOOTSTRAP_REPS)
            out["paired"].append({"score": col, "d": d, "lo": lo, "hi": hi, "n": len(sub)})
    secs = df.groupby(df.role.str.split(":").str[0]).seconds.mean()
    out["seconds"] = {k: float(v) for k, v in secs.items()}
    return out


def report(df: pd.DataFrame, zc_path: Path | None = None) -> None:
    s = summarize(df, zc_path)
    n = s["n"]
    print(
        f"\n## fidelity: {n} architectures with a reference (reference test acc "
        f"{s['ref_min']:.3f}..{s['ref_max']:.3f})"
    )
    noise = s["noise"]
    if noise:
        print(
            "\nnoise floor (val acc; seed-to-seed Spearman rho on the noise architectures: mean "
            "over "
            "seed pairs [bootstrap 95%], lowest..highest pair; a proxy's rho against the reference "
            "on the same architectures, one seed each and averaged over the seeds):"
        )
        for k, r in noise.items():
            vs = (f"  vs reference {r['vs_ref_single']:.3f} (1 seed), {r['vs_ref_mean']:.3f} "
                  f"[{r['vs_ref_mean_ci'][0]:.3f}, {r['vs_ref_mean_ci'][1]:.3f}] (seed means)"
                  if "vs_ref_single" in r else "")
            print(f"  {k:<18} {r['rho']:6.3f} [{r['lo']:6.3f}, {r['hi']:6.3f}]  "
                  f"{r['min']:.3f}..{r['max']:.3f}  ({r['archs']} archs x {r['seeds']} seeds){vs}")
    print(
        f"\n{'score':<22}{'rho':>7}{'95% CI':>17}{'tau':>7}{'95% CI':>17}{'partial':>9}{'top5':>6}"
    )
    print("-" * 85)
    for r in s["rows"]:
        print(
            f"{r['score']:<22}{r['rho']:>7.3f}  [{r['rho_lo']:>6.3f},{r['rho_hi']:>6.3f}]"
            f"{r['tau']:>7.3f}  [{r['tau_lo']:>6.3f},{r['tau_hi']:>6.3f}]"
            f"{r['partial']:>9.3f}{r['top5']:>6.1f}"
        )
    if s["base"]:
        print(f"\npaired against the CPU default's score ({s['base']}): rho difference, "
              f"bootstrap 95%")
        for r in s["paired"]:
            print(f"  {r['score']:<22}{r['d']:>+7.3f}  [{r['lo']:>+6.3f},{r['hi']:>+6.3f}]  "
                  f"(n = {r['n']})")
    print(
        "\n# mean seconds per training: "
        + ", ".join(f"{k} {v:.0f}s" for k, v in s["seconds"].items())
        + f"; {s['trainings']} trainings in the CSV; n = {n} (a rho on n = 40 has a 95% interval "
        f"about 0.5 wide)"
    )


def band_counts(space, bands: list[tuple[int, int]], draws: int = 4000,
                seed: int = 0) -> list[int]:
    """How many of ``draws`` uniform draws from ``space`` (every choice uniform, as
    :func:`sample_band` draws) have their MACs in each ``(lo, hi)`` band."""
    trial = Uniform(seed)
    got = [0] * len(bands)
    for _ in range(draws):
        m = count(space.sample(trial)).macs
        for k, (lo, hi) in enumerate(bands):
            got[k] += lo <= m <= hi
    return got


def noise_floor(df: pd.DataFrame, reps: int = BOOTSTRAP_REPS, seed: int = 0) -> dict[str, dict]:
    """Seed-to-seed agreement of every role (each proxy, the reference) on the noise architectures:
    the mean Spearman rho over seed pairs, its bootstrap 95% interval (architectures resampled),
    the lowest and highest pair, and for a proxy its rho against the reference on the same
    architectures, single seed (the proxy's first seed against the reference's first) and with
    both averaged over their seeds. Seeds with fewer than 4 architectures are left out."""
    out: dict[str, dict] = {}
    wides = {}
    for role, g in df.groupby("role"):
        wide = g.pivot_table(index="arch_id", columns="seed", values="val_acc")
        wide = wide.loc[:, wide.notna().sum() >= 4].dropna()
        if wide.shape[1] >= 2 and len(wide) >= 4:
            wides[role] = wide

    def pair_rhos(w: np.ndarray) -> list[float]:
        """Spearman rho of every pair of seed columns of ``w``."""
        k = w.shape[1]
        return [spearman(w[:, a], w[:, b]) for a in range(k) for b in range(a + 1, k)]

    rng = np.random.default_rng(seed)
    ref = wides.get("reference")
    for role, wide in wides.items():
        w = wide.to_numpy()
        pairs = pair_rhos(w)
        vals = []
        for _ in range(reps):
            i = rng.integers(0, len(w), len(w))
            if all(len(set(w[i, j])) > 1 for j in range(w.shape[1])):
                vals.append(float(np.mean(pair_rhos(w[i]))))
        row = {"rho": float(np.mean(pairs)), "lo": float(np.nanpercentile(vals, 2.5)),
               "hi": float(np.nanpercentile(vals, 97.5)), "min": min(pairs), "max": max(pairs),
               "archs": len(w), "seeds": w.shape[1]}
        if ref is not None and role != "reference":
            both = wide.index.intersection(ref.index)
            if len(both) >= 4:
                row["vs_ref_single"] = spearman(wide.loc[both].iloc[:, 0], ref.loc[both].iloc[:, 0])
                xm, ym = wide.loc[both].mean(axis=1), ref.loc[both].mean(axis=1)
                row["vs_ref_mean"] = spearman(xm, ym)
                row["vs_ref_mean_ci"] = bootstrap(spearman, xm, ym, reps=reps, seed=seed)
                row["vs_ref_archs"] = len(both)
        out[role] = row
    return out


if __name__ == "__main__":
    sys.exit(main())
