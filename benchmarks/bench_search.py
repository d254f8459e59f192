"""igcv-search's framework overhead and search efficiency, measured on this machine.

    python benchmarks/bench_search.py overhead   --trials 6 --steps 24
    python benchmarks/bench_search.py efficiency --seeds 5 --data-dir .data
    python benchmarks/bench_search.py throughput --reps 3 --data-dir .data
    python benchmarks/bench_search.py throughput --report RESULTS.csv

overhead: one search, one trial at a time, with a short proxy. Per trial: the proxy's
training + validation time (the trial's compute) against everything else -- sampling, cost and
budget checks, Ray scheduling and actor reuse, handing the data to the worker, building the
model, telling the study, rewriting the run directory's files. Target: < 5% at 10 s trials.

efficiency: search efficiency at equal evaluation cost (issue 11, item 5): random search, TPE
and evolution (``--scheduler none``) against the default ladder, ``--seeds`` sampler seeds each,
every pick re-trained at the fidelity benchmark's reference budget with fresh seeds, against
the width-scaled igcv3_d and mobilenet_v2 and the best of the pooled random searches (regret).
The protocol, the CSV and resume are in ``benchmarks/search_efficiency.py``.

throughput: the driver's cost per trial and the trials per second on loopback clusters of 1, 2
and 3 worker nodes (``ray.cluster_utils.Cluster``: a head without CPUs and N one-CPU worker
nodes, each its own raylet), zero-cost proxy, ``--trials`` (200) architectures of ``--space``
at ``--flops``. Driver CPU per trial is *marginal*: the driver process's CPU time (user + system,
from ``wait4``) of a ``--trials`` search minus that of a ``--small`` (20) one on the same
cluster, over the difference in trials, so Python start-up, imports, the data load and Ray's
connection do not count. Trials per second: evaluated architectures over the search's
``elapsed_s`` (``run.json``). Each (nodes, repetition) pair is one CSV row
(``benchmarks/results/throughput_zero_cost.csv``; rows already there are skipped); node counts
run in a rotated order per repetition, and the 2-node / 1-node ratio is paired by repetition.
On a 2-core machine 3 one-CPU nodes oversubscribe the cores: the table says how many cores
the machine has.

Chosen configuration (the defaults): the ``mixed`` space, MACs band [64M, 80M] at 224x224 /
1000 classes (``--flops 80M --flops-min 64M``, the fidelity benchmark's band; the CIFAR-10 forms
the proxy trains have 15-21M MACs; a cheaper band does not work: not one of 4,000 uniform draws
of ``mixed`` falls in [40M, 50M], and igcv-search gives up after 2,000 draws per suggestion;
[64M, 80M] holds 4% of them). The proxy is the CPU default (2,700 images seen once, batch 32,
84 steps) scored on 5,000 validation images (the CPU default, the same for every method);
the ladder has 8 first-rung trials = 26 units, so the others get 26 trials. Measured on this
2-core VM (CPU time, 1 thread): one first-rung trial ~27 s, one reference training at 50M ~120 s
(~1.5x that at 80M); searches run 2 trials at a time. Expected: ~8-10 min per search (20
searches ~3 h) plus <= 49 reference re-trainings (40 picks, 4 baseline, 5 pool; a pick two
methods share is trained once) of ~2-3 min at 2 threads (~2 h): about 5 h on an otherwise idle
machine, about twice that beside another benchmark.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from igcv_nas.cli.search import main as search_main
from igcv_nas.search.runstore import STUDY_NAME


def _proxy_args(a) -> list[str]:
    out = ["--batch-size", str(a.batch_size), "--val-size", str(a.val_size),
           "--train-fraction", str(a.train_fraction)]
    out += ["--steps", str(a.steps)] if a.steps else ["--epochs", str(a.epochs)]
    return out


def _search(a, workdir: Path, name: str, extra: list[str]) -> tuple[Path, float]:
    d = workdir / name
    t0 = time.perf_counter()
    rc = search_main(["--space", a.space, "--flops", a.flops, "--trials", str(a.trials),
                      "--seed", str(a.seed), "--quiet", "--no-asha", "--run-dir", str(d),
                      *(["--data-dir", a.data_dir] if a.data_dir else []), *_proxy_args(a), *extra])
    wall = time.perf_counter() - t0
    if rc != 0:
        sys.exit(f"igcv-search exited with {rc}")
    return d, wall


def overhead(a, workdir: Path) -> None:
    import ray

    from igcv_nas.search.raytune import connect
    t0 = time.perf_counter()
    connect(None)
    ray_start = time.perf_counter() - t0
    d, wall = _search(a, workdir, "overhead", ["--max-concurrent", "1", "--cpus-per-trial",
                                                str(os.cpu_count())])
    df = pd.read_csv(d / "trials.csv")
    ev = df[df.status == "complete"].set_index("number")
    meta = json.loads((d / "run.json").read_text())
    # full-precision times from the study: with one trial at a time, trial i's cycle runs from
    # the previous trial's tell to its own (sampling, scheduling, training, reporting, telling)
    st = optuna.load_study(study_name=STUDY_NAME, storage=JournalStorage(
        JournalFileBackend(str(d / "study.journal"))))
    done = sorted((t for t in st.trials if t.number in ev.index), key=lambda t: t.datetime_complete)
    cycles = [(b.number, (b.datetime_complete - a.datetime_complete).total_seconds())
              for a, b in zip(done, done[1:])]
    compute = statistics.median(ev.loc[n, "train_seconds"] for n, _ in cycles)
    in_worker = statistics.median(ev.loc[n, "wall_seconds"] - ev.loc[n, "train_seconds"]
                                  for n, _ in cycles)
    total = statistics.median(c - ev.loc[n, "train_seconds"] for n, c in cycles)
    first = (done[0].datetime_complete - done[0].datetime_start).total_seconds()
    print(f"# overhead: {len(ev)} trials one at a time, {os.cpu_count()} threads per trial; "
          f"medians over trials 2..{len(ev)}; Ray start {ray_start:.1f} s and the first trial "
          f"(worker start, {first - ev.loc[done[0].number, 'train_seconds']:.1f} s outside "
          f"training) are one-off costs per search, not counted")
    print(f"{'per trial (median)':<46}{'seconds':>9}{'share of compute':>18}")
    rows = [("proxy compute (training + validation)", compute),
            ("in the worker, outside training (build, ckpt)", in_worker),
            ("driver + Ray (sample, schedule, tell, write)", total - in_worker),
            ("overhead total", total)]
    for label, v in rows:
        print(f"{label:<46}{v:>9.2f}{v / compute:>17.1%}")
    print(f"# search wall {meta['elapsed_s']:.1f} s (igcv-search end to end incl. data load: "
          f"{wall:.1f} s); {df[df.status == 'over-budget'].shape[0]} over-budget samples skipped")
    ray.shutdown()


THROUGHPUT_CSV = Path(__file__).parent / "results" / "throughput_zero_cost.csv"
THROUGHPUT_COLUMNS = ["nodes", "rep", "trials", "small", "evaluated", "elapsed_s",
                      "trials_per_s", "driver_cpu_s", "driver_cpu_small_s",
                      "driver_ms_per_trial", "space", "flops", "machine", "cores", "date",
                      "command"]


def _driver_run(address: str, a, trials: int, seed: int, run_dir: Path) -> tuple[float, dict]:
    """One igcv-search process on the cluster: its CPU seconds (user + system) and run.json."""
    import subprocess
    cmd = [sys.executable, "-m", "igcv_nas.cli.search", "--address", address, "--space",
           a.space, "--flops", a.flops, "--trials", str(trials), "--seed", str(seed),
           "--proxy", "zero-cost", "--quiet", "--run-dir", str(run_dir),
           *(["--data-dir", a.data_dir] if a.data_dir else [])]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read() if p.stderr else ""
    if p.returncode != 0:
        sys.exit(f"igcv-search exited with {p.returncode}: {err[-2000:]}")
    return usage.ru_utime + usage.ru_stime, json.loads((run_dir / "run.json").read_text())


def _throughput_row(a, nodes: int, rep: int, workdir: Path) -> dict:
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(nodes):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        small_cpu, _ = _driver_run(cluster.address, a, a.small, 1000 + rep,
                                   workdir / f"n{nodes}-r{rep}-small")
        big = workdir / f"n{nodes}-r{rep}"
        cpu, meta = _driver_run(cluster.address, a, a.trials, rep, big)
    finally:
        cluster.shutdown()
    df = pd.read_csv(big / "trials.csv")
    evaluated = int(df[(df.rung == 0) & df.status.isin(["complete", "pruned", "failed"])].shape[0])
    elapsed = float(meta["elapsed_s"])
    return {"nodes": nodes, "rep": rep, "trials": a.trials, "small": a.small,
            "evaluated": evaluated, "elapsed_s": round(elapsed, 3),
            "trials_per_s": round(evaluated / elapsed, 4), "driver_cpu_s": round(cpu, 3),
            "driver_cpu_small_s": round(small_cpu, 3),
            "driver_ms_per_trial": round(1000 * (cpu - small_cpu) / (a.trials - a.small), 2),
            "space": a.space, "flops": a.flops,
            "machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "command": "python benchmarks/bench_search.py throughput " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in (("space", a.space),
                                                            ("flops", a.flops),
                                                            ("trials", a.trials),
                                                            ("small", a.small)))}


def throughput_summary(csv: Path) -> dict:
    """A throughput CSV summarised: its conditions (``meta``), per node count the median and
    range over repetitions of trials/s and driver ms per trial (``rows``), and each node
    count's throughput over 1 node's, paired by repetition (``ratios``)."""
    df = pd.read_csv(csv)
    m = df.iloc[0]
    meta = {"machine": m["machine"], "cores": int(m["cores"]), "first": df["date"].min(),
            "last": df["date"].max(), "space": m["space"], "flops": m["flops"],
            "trials": int(m["trials"]), "small": int(m["small"]), "command": m["command"]}
    rows = []
    for n, g in df.groupby("nodes"):
        t, c = g.trials_per_s, g.driver_ms_per_trial
        rows.append({"nodes": int(n), "reps": len(g), "tps": (t.median(), t.min(), t.max()),
                     "ms": (c.median(), c.min(), c.max())})
    ratios = []
    one = df[df.nodes == 1].set_index("rep").trials_per_s
    for n in sorted(set(df.nodes) - {1}):
        r = (df[df.nodes == n].set_index("rep").trials_per_s / one).dropna()
        if len(r):
            ratios.append({"nodes": int(n), "n": len(r),
                           "ratio": (r.median(), r.min(), r.max())})
    return {"meta": meta, "rows": rows, "ratios": ratios}


def throughput_report(csv: Path) -> None:
    """The table of a throughput CSV (:func:`throughput_summary`)."""
    s = throughput_summary(csv)
    m = s["meta"]
    print(f"# throughput: {m['machine']}, {m['cores']} cores, {m['first']} .. {m['last']}; "
          f"zero-cost proxy, {m['space']} at {m['flops']}, {m['trials']} trials (driver CPU "
          f"marginal over a {m['small']}-trial run); `{m['command']}`")
    print(f"{'nodes':>5} {'reps':>4} {'trials/s median [min, max]':>28} "
          f"{'driver ms/trial median [min, max]':>34}")
    for r in s["rows"]:
        t, c = r["tps"], r["ms"]
        print(f"{r['nodes']:>5} {r['reps']:>4} {t[0]:>12.2f} [{t[1]:.2f}, {t[2]:.2f}]"
              f"{'':>5}{c[0]:>12.1f} [{c[1]:.1f}, {c[2]:.1f}]")
    for q in s["ratios"]:
        r = q["ratio"]
        print(f"# {q['nodes']} nodes / 1 node, paired by repetition: median {r[0]:.2f}x "
              f"[{r[1]:.2f}, {r[2]:.2f}] over {q['n']}")


def throughput(a) -> None:
    csv = Path(a.csv) if a.csv else THROUGHPUT_CSV
    if a.report:
        throughput_report(Path(a.report))
        return
    done = set()
    if csv.is_file():
        old = pd.read_csv(csv)
        done = set(zip(old.nodes, old.rep))
    counts = [int(x) for x in a.nodes.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    try:
        for rep in range(a.reps):
            order = counts[rep % len(counts):] + counts[:rep % len(counts)]
            for n in order:
                if (n, rep) in done:
                    continue
                row = _throughput_row(a, n, rep, workdir)
                csv.parent.mkdir(parents=True, exist_ok=True)
                pd.DataFrame([row], columns=THROUGHPUT_COLUMNS).to_csv(
                    csv, mode="a", header=not csv.is_file(), index=False)
                print(f"# nodes {n} rep {rep}: {row['trials_per_s']:.2f} trials/s, "
                      f"{row['driver_ms_per_trial']:.1f} ms driver CPU per trial", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    throughput_report(csv)


def efficiency(a) -> None:
    import search_efficiency as se
    if a.report:
        se.report(Path(a.report))
        return
    try:
        se.run(a)
    except KeyboardInterrupt:
        print("\n# interrupted; start the same command again to continue (finished units are "
              "skipped, an interrupted search is resumed)", file=sys.stderr)
        sys.exit(130)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    o = sub.add_parser("overhead", help="framework overhead per trial, one trial at a time")
    o.add_argument("--space", default="igcv3")
    o.add_argument("--flops", default="300M")
    o.add_argument("--trials", type=int, default=6)
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--epochs", type=int, default=1)
    o.add_argument("--steps", type=int, default=None)
    o.add_argument("--batch-size", type=int, default=32)
    o.add_argument("--train-fraction", type=float, default=0.03)
    o.add_argument("--val-size", type=int, default=1000)
    o.add_argument("--data-dir", default=None)
    o.add_argument("--keep", help="keep the run directories here")
    e = sub.add_parser("efficiency", help="samplers and the ladder at equal evaluation cost, "
                                          "picks re-trained at the reference budget")
    e.add_argument("--space", default="mixed")
    e.add_argument("--flops", default="80M", help="MACs budget at --target")
    e.add_argument("--flops-min", default="64M", help="floor of the MACs band")
    e.add_argument("--target", default="space")
    e.add_argument("--seeds", type=int, default=5, help="sampler seeds 0..N-1 per method")
    e.add_argument("--methods", default="random,tpe,evolution,ladder")
    e.add_argument("--ladder-trials", type=int, default=8,
                   help="first-rung trials of the ladder; the others get its cost in trials")
    e.add_argument("--ref-seeds", type=int, default=2, help="reference re-trainings per pick")
    e.add_argument("--pool-top", type=int, default=5, help="regret pool: top K of the random pool")
    e.add_argument("--epochs", type=int, default=None, help="proxy override (default: CPU default)")
    e.add_argument("--steps", type=int, default=None, help="proxy override")
    e.add_argument("--batch-size", type=int, default=None, help="proxy override")
    e.add_argument("--train-fraction", type=float, default=None, help="proxy override")
    e.add_argument("--val-size", type=int, default=None,
                   help="proxy validation images (default: the CPU default, 5,000)")
    e.add_argument("--cpus-per-trial", type=float, default=None)
    e.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")),
                   help="threads of the reference re-trainings (in this process)")
    e.add_argument("--data-dir", default=None)
    e.add_argument("--csv", default=None,
                   help="default benchmarks/results/search_efficiency_<space>_<flops>[_quick].csv")
    e.add_argument("--runs-dir", default=None,
                   help="default benchmarks/results/runs/<csv stem> (keep it out of git)")
    e.add_argument("--quick", action="store_true",
                   help="SMOKE RUNS ONLY: the reference trains --reference-steps steps, scored on "
                        "1,000 test images; output and CSV are labelled as such")
    e.add_argument("--reference-steps", type=int, default=4)
    e.add_argument("--allow-other-machine", action="store_true")
    e.add_argument("--report", metavar="CSV", help="only print the table of that CSV")
    t = sub.add_parser("throughput", help="driver CPU per trial and trials/s on 1-3 loopback "
                                          "nodes, zero-cost proxy")
    t.add_argument("--space", default="igcv3")
    t.add_argument("--flops", default="300M")
    t.add_argument("--trials", type=int, default=200)
    t.add_argument("--small", type=int, default=20,
                   help="trials of the paired run whose driver CPU is subtracted")
    t.add_argument("--nodes", default="1,2,3", help="worker node counts (one CPU each)")
    t.add_argument("--reps", type=int, default=3)
    t.add_argument("--data-dir", default=None)
    t.add_argument("--csv", default=None, help=f"default {THROUGHPUT_CSV}")
    t.add_argument("--report", metavar="CSV", help="only print the table of that CSV")
    a = ap.parse_args()
    if a.what == "throughput":
        throughput(a)
        return
    if a.what == "efficiency":
        efficiency(a)
        return
    print(f"# bench_search: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}")
    workdir = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bench-search-"))
    try:
        overhead(a, workdir)
    finally:
        if not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
