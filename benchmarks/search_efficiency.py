"""Search efficiency at equal evaluation cost (issue 11, item 5): the work behind
``python benchmarks/bench_search.py efficiency``.

Protocol
--------
* **Methods**, each run with ``--seeds`` sampler seeds (0, 1, ..): ``random``, ``tpe`` and
  ``evolution`` with ``--scheduler none`` (a method's pick is its best single first-rung score),
  and ``ladder``: ``--scheduler ladder`` with the default sampler (its pick is ``best.json``'s
  confirmed winner: the best mean over the finalists' fresh-seed re-trainings).
* **Equal evaluation cost**: the ladder gets ``--ladder-trials N`` first-rung trials, which
  cost ``igcv_nas.search.trials.ladder_cost(N, ladder_plan(N))`` first-rung-training units (26 for
  N = 8: 8 trials, 2 promoted to 3x the images, 2 confirmed with 2 fresh seeds at 3x); the other
  methods get that many trials (rounded). The proxy is the same for all: ``igcv-search``'s CPU
  default budget (with the overrides given here, none by default). The
  proxy's own seeds are the search default for every method and seed (common random numbers:
  the same architecture gets the same first-rung score in every search); the replicate is the
  sampler seed.
* **Reference** (each pick, both baselines, the regret pool): ``bench_fidelity.REFERENCE`` --
  13,500 images x 2 epochs, batch 64, lr 0.1 -- trained on half B of the 45,000-image training
  split (``bench_fidelity.halves()``) and scored on the 10,000 test images, with the
  ``--ref-seeds`` fresh seeds 5001, 5002 (initialisation and data order; the search never uses
  them). The searches themselves sample their proxy subsets from the whole 45,000-image split
  (``igcv-search`` cannot be restricted to half A), so a proxy and a reference may share training
  images; they never share test images (the search never sees the test split). A pick's
  reference accuracy is the mean over the reference seeds.
* **Baselines**: ``igcv3_d`` and ``mobilenet_v2`` width-scaled by ``zoo.scale_to_macs`` to the
  largest width within ``--flops`` at the space's target, trained in their CIFAR forms with the
  same recipe and seeds.
* **Regret pool**: the architectures evaluated by all ``random`` searches, pooled (distinct
  arch ids, complete first-rung rows), ranked by proxy score (ties: fewer MACs); the top
  ``--pool-top`` (5) are re-trained at the reference budget with the *first* reference seed
  (5001) only. ``pool best`` = the best of those. A pick's **regret** = pool best minus the
  pick's reference accuracy with that same seed (5001); it is negative when a pick beats all
  five (a guided method may find architectures the random pool ranked lower or never drew).
* **Statistics**: per method, mean over seeds of the picks' reference accuracy with a
  two-sided 95% **Student-t interval** (df = seeds - 1); the paired comparison against random
  search pairs the two methods' picks of the same sampler seed: mean difference, its 95%
  t-interval and the seeds won; baselines: mean, std and range over the reference seeds; the
  re-training noise (pooled std over the picks' reference seeds) is printed for scale.

Work units and resume
---------------------
Every finished unit -- one search, one re-training -- appends a row to the CSV
(``benchmarks/results/search_efficiency_<space>_<flops>.csv``, long format; columns
:data:`FIELDS`) and is skipped when started again. Re-trainings are keyed by (arch id,
reference seed), so an architecture picked by two methods is trained once. The searches run as
**subprocesses** (``python -m igcv_nas.cli.search``): every search gets a fresh Ray instance
(no Ray or CUDA state carried from one search into the next, no leaked workers or heap), a
search that dies takes only itself down, and an interrupted one is continued with
``igcv-search --resume RUN_DIR`` exactly as a user would. Run directories live under
``benchmarks/results/runs/<csv stem>/<method>-s<seed>`` (keep that path out of git);
the subprocess output goes to ``<run dir>.log``. The settings of the benchmark are stored next
to the CSV (``.json``); a restart with different settings is refused.
"""
from __future__ import annotations

import csv
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

METHODS = ("random", "tpe", "evolution", "ladder")
REF_SEED_BASE = 5000  # reference seeds 5001, 5002, ...: fresh (searches use 0, 1000, 2000)
FIELDS = ["method", "seed", "role", "arch_id", "ref_seed", "score", "first_rung_score", "macs",
          "params", "trials", "cost_units", "compute_s", "seconds", "confirmed", "sampler",
          "detail", "machine", "finished"]


# ---------------------------------------------------------------------------------------------
# the machine and the CSV

def machine_line() -> str:
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{socket.gethostname()}: {cpu}, {os.cpu_count()} cores, {gpu}, torch "
            f"{torch.__version__}, Python {platform.python_version()}")


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def append_row(path: Path, row: dict) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in FIELDS})
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------------------------------------
# configuration

def config_of(a) -> dict:
    """What defines the benchmark's results (stored beside the CSV; a restart must match)."""
    from igcv_nas.search.trials import ladder_cost, ladder_plan
    cost = ladder_cost(a.ladder_trials, ladder_plan(a.ladder_trials))
    return {"space": a.space, "flops": a.flops, "flops_min": a.flops_min, "target": a.target,
            "ladder_trials": a.ladder_trials, "cost_units": cost, "trials": int(round(cost)),
            "proxy": proxy_args(a), "ref_seeds": ref_seeds(a), "pool_top": a.pool_top,
            "quick": bool(a.quick), "reference_steps": a.reference_steps if a.quick else None}


def ref_seeds(a) -> list[int]:
    return [REF_SEED_BASE + k for k in range(1, a.ref_seeds + 1)]


def proxy_args(a) -> list[str]:
    out = []
    for flag, v in (("--epochs", a.epochs), ("--steps", a.steps), ("--batch-size", a.batch_size),
                    ("--train-fraction", a.train_fraction), ("--val-size", a.val_size)):
        if v is not None:
            out += [flag, str(v)]
    return out


def default_paths(a) -> tuple[Path, Path]:
    stem = f"search_efficiency_{a.space}_{a.flops}{'_quick' if a.quick else ''}"
    csv_path = Path(a.csv) if a.csv else REPO / "benchmarks" / "results" / f"{stem}.csv"
    runs = (Path(a.runs_dir) if a.runs_dir
            else REPO / "benchmarks" / "results" / "runs" / csv_path.stem)
    return csv_path, runs


# ---------------------------------------------------------------------------------------------
# searches (subprocesses)

def _status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "run.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def search_command(a, cfg: dict, method: str, seed: int, run_dir: Path) -> list[str]:
    exe = [sys.executable, "-m", "igcv_nas.cli.search"]
    data = ["--data-dir", os.path.abspath(a.data_dir)] if a.data_dir else []
    res = ["--cpus-per-trial", str(a.cpus_per_trial)] if a.cpus_per_trial else []
    if (run_dir / "run.json").is_file():  # started before: continue it
        return exe + ["--resume", str(run_dir), "--quiet", *data, *res]
    args = ["--space", a.space, "--flops", a.flops, "--target", a.target, "--seed", str(seed),
            "--quiet", "--run-dir", str(run_dir), *data, *res, *cfg["proxy"]]
    if a.flops_min is not None:
        args += ["--flops-min", a.flops_min]
    if method == "ladder":  # the default sampler
        args += ["--scheduler", "ladder", "--trials", str(a.ladder_trials)]
    else:
        args += ["--scheduler", "none", "--sampler", method, "--trials", str(cfg["trials"])]
    return exe + args


def run_search(a, cfg: dict, method: str, seed: int, run_dir: Path) -> None:
    """Run (or continue) one search to its end; output to ``<run_dir>.log``."""
    if _status(run_dir) in ("finished", "stopped"):
        return
    cmd = search_command(a, cfg, method, seed, run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = run_dir.with_suffix(".log")
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    with log.open("a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=str(REPO), env=env)
    if rc == 130:
        raise KeyboardInterrupt
    if rc != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(True)[-15:])
        raise SystemExit(f"igcv-search ({method}, seed {seed}) exited with {rc}; last lines of "
                         f"{log}:\n{tail}")


def search_row(method: str, seed: int, run_dir: Path, machine: str) -> dict:
    """The CSV row of a finished search: its pick and what the search cost."""
    import pandas as pd
    best = json.loads((run_dir / "best.json").read_text())
    meta = json.loads((run_dir / "run.json").read_text())
    df = pd.read_csv(run_dir / "trials.csv")
    first = df[(df.rung == 0) & df.status.isin(["complete", "pruned", "failed"])]
    if not best:  # nothing completed (e.g. no architecture found in the band): no pick
        return {"method": method, "seed": seed, "role": "search", "arch_id": "",
                "trials": len(first), "seconds": f"{float(meta.get('elapsed_s', 0.0)):.1f}",
                "sampler": meta["settings"]["sampler"], "machine": machine,
                "detail": f"no pick: no architecture completed in {_rel(run_dir)}",
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    units = float(len(first))
    if "rung" in df and (df.rung > 0).any():
        plan = (meta.get("engine") or {}).get("ladder") or []
        factors = {k + 1: r["factor"] for k, r in enumerate(plan)}
        ladder = df[(df.rung > 0) & df.status.isin(["complete", "pruned", "failed"])]
        units += float(sum(factors.get(int(r), 1) for r in ladder.rung))
    spec = _trial_dir(run_dir, best["number"]) / "proxy_spec.json"
    if not spec.is_file():
        raise SystemExit(f"{run_dir}: the pick's spec {spec} is missing")
    confirmed = bool(best.get("confirmed"))
    score = best["confirmation"]["winner"]["mean"] if confirmed else best.get("val_acc")
    return {"method": method, "seed": seed, "role": "search", "arch_id": best["arch_id"],
            "score": f"{score:.6f}", "first_rung_score": f"{best.get('val_acc'):.6f}",
            "macs": best.get("macs"), "params": best.get("params"), "trials": len(first),
            "cost_units": f"{units:g}", "compute_s": f"{df.train_seconds.fillna(0).sum():.1f}",
            "seconds": f"{float(meta.get('elapsed_s', 0.0)):.1f}", "confirmed": confirmed,
            "sampler": meta["settings"]["sampler"], "detail": _rel(spec), "machine": machine,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _trial_dir(run_dir: Path, number: int) -> Path:
    from igcv_nas.search.runstore import RunDir
    return RunDir(run_dir).trial_dir(int(number))


def _rel(p: Path) -> str:
    p = Path(p).resolve()
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return str(p)


def _abs(p: str) -> Path:
    q = Path(p)
    return q if q.is_absolute() else REPO / q


# ---------------------------------------------------------------------------------------------
# reference trainings (in this process)

class Reference:
    """The reference recipe of bench_fidelity on half B, scored on the test images."""

    def __init__(self, a):
        import torch

        from bench_fidelity import REFERENCE, halves
        from igcv_nas.evaluate.data import load_splits
        torch.set_num_threads(a.threads)
        splits = load_splits("cifar10", a.data_dir, val_size=5000, seed=0, download_ok=False)
        self.splits = halves(splits)[1]
        self.cfg = REFERENCE
        self.val_size = 10_000
        if a.quick:  # smoke runs only: a few steps, 1,000 test images
            self.cfg = replace(REFERENCE, steps=a.reference_steps)
            self.val_size = 1000

    def train(self, spec, seed: int) -> tuple[dict, float]:
        from igcv_nas.evaluate.proxy import ProxyBudget, evaluate
        budget = ProxyBudget(mode="training", train=replace(self.cfg, seed=seed, data_seed=seed),
                             val_size=self.val_size)
        t0 = time.perf_counter()
        s = evaluate(spec, self.splits, budget)
        return s, time.perf_counter() - t0


def baselines(a) -> list[tuple[str, float, object, int, int]]:
    """(name, width, CIFAR-10 form, MACs at the target, params at the target) of the two
    width-scaled hand-designed networks at ``--flops``."""
    from igcv_nas.arch import zoo
    from igcv_nas.arch.cost import count
    from igcv_nas.search.settings import parse_target
    from igcv_nas.arch.space import load_space
    from igcv_nas.units import parse_count
    budget = parse_count(a.flops, "--flops")
    space = load_space(a.space)
    t = parse_target(a.target) or (space.target.input_size, space.target.num_classes)
    out = []
    for name in ("igcv3_d", "mobilenet_v2"):
        if t[0] == 32:  # CIFAR-sized target: scale the CIFAR form itself
            best = None
            for i in range(int(round((4.0 - 0.1) / 0.005)) + 1):
                w = round(0.1 + i * 0.005, 4)
                m = count(zoo.ZOO[name](width=w, cifar=True, num_classes=t[1])).macs
                if m <= budget and (best is None or m >= best[0]):
                    best = (m, w)
            if best is None:
                raise SystemExit(f"{name} does not fit {a.flops} MACs at {a.target}")
            w = best[1]
            spec_t = zoo.ZOO[name](width=w, cifar=True, num_classes=t[1])
        else:
            w, spec_t = zoo.scale_to_macs(name, budget, t[0], t[1])
        c = count(spec_t)
        out.append((name, w, zoo.ZOO[name](width=w, cifar=True, num_classes=10), c.macs, c.params))
    return out


# ---------------------------------------------------------------------------------------------
# the benchmark

def pool_rows(rows: list[dict], top: int) -> list[dict]:
    """The top ``top`` distinct architectures of the pooled random searches by proxy score."""
    import pandas as pd
    frames = []
    for r in rows:
        if r["role"] == "search" and r["method"] == "random" and r["arch_id"]:
            run_dir = _abs(r["detail"]).parents[2]
            df = pd.read_csv(run_dir / "trials.csv")
            df = df[(df.rung == 0) & (df.status == "complete")].copy()
            df["run_dir"] = _rel(run_dir)
            frames.append(df)
    if not frames:
        return []
    df = pd.concat(frames).sort_values(["val_acc", "macs", "run_dir", "number"],
                                       ascending=[False, True, True, True])
    df = df.drop_duplicates("arch_id").head(top)
    return [{"method": "random-pool", "seed": k, "role": "pool", "arch_id": x.arch_id,
             "score": f"{x.val_acc:.6f}", "macs": int(x.macs), "params": int(x.params),
             "detail": _rel(_trial_dir(_abs(x.run_dir), int(x.number)) / "proxy_spec.json"),
             "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
            for k, x in enumerate(df.itertuples(), start=1)]


def run(a) -> None:
    from igcv_nas.arch.spec import load as load_spec
    csv_path, runs = default_paths(a)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    cfg = config_of(a)
    cfg_path = csv_path.with_suffix(".json")
    if cfg_path.is_file():
        old = json.loads(cfg_path.read_text())
        diff = [k for k in cfg if old.get(k) != cfg[k]]
        if diff:
            raise SystemExit(f"{csv_path} was started with other settings ({diff[0]}: "
                             f"{old.get(diff[0])!r}, now {cfg[diff[0]]!r}); use another --csv")
    else:
        cfg_path.write_text(json.dumps(cfg, indent=1) + "\n")
    machine = machine_line()
    print(f"# machine: {machine}", flush=True)
    if a.quick:
        print(f"# SMOKE RUN (--quick): reference = {a.reference_steps} steps, 1,000 test images; "
              f"NOT a measurement", flush=True)
    methods = [m for m in a.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            raise SystemExit(f"--methods: {m!r}; accepted: {', '.join(METHODS)}")
    seeds = list(range(a.seeds))
    rseeds = ref_seeds(a)
    rows = read_rows(csv_path)
    others = {r["machine"] for r in rows if r.get("machine") and r["machine"] != machine}
    if others and not a.allow_other_machine:
        raise SystemExit(f"{csv_path} holds rows measured on another machine ({others.pop()}); "
                         f"everything in one table must come from one machine "
                         f"(--allow-other-machine to continue anyway)")
    searched = {(r["method"], int(r["seed"])) for r in rows if r["role"] == "search"}
    trained = {(r["role"], r["arch_id"], int(r["ref_seed"])) for r in rows
               if r["role"] in ("reference", "baseline")}
    planned_searches = len(methods) * len(seeds)
    print(f"# {sum(1 for m, sd in searched if m in methods and sd in seeds)} of "
          f"{planned_searches} searches ({', '.join(methods)}; seeds 0..{len(seeds) - 1}) and "
          f"{len(trained)} re-trainings "
          f"already in {csv_path}; run directories under {runs}", flush=True)
    print(f"# equal cost: ladder {a.ladder_trials} first-rung trials = {cfg['cost_units']:g} "
          f"units; random/tpe/evolution {cfg['trials']} trials each", flush=True)
    ref = None

    def retrain(role, method, seed, arch_id, spec, rs, extra=None):
        nonlocal ref
        if (role, arch_id, rs) in trained:
            return
        if ref is None:
            ref = Reference(a)
        s, secs = ref.train(spec, rs)
        row = {"method": method, "seed": seed, "role": role, "arch_id": arch_id, "ref_seed": rs,
               "score": f"{s['val_acc']:.6f}", "seconds": f"{secs:.1f}", "machine": machine,
               "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **(extra or {})}
        append_row(csv_path, row)
        trained.add((role, arch_id, rs))
        print(f"  {role:<9} {method:<22} seed {seed!s:<3} arch {arch_id} ref seed {rs}: test acc "
              f"{s['val_acc']:.4f} ({secs:.0f} s)", flush=True)

    # 1. the baselines (cheap, and a sanity check before hours of searching)
    for name, w, spec, macs, params in baselines(a):
        for rs in rseeds:
            retrain("baseline", f"{name} x{w:g}", "", spec.arch_id, spec, rs,
                    {"macs": macs, "params": params, "detail": f"width {w:g}"})
    # 2. the searches, seed by seed (after k seeds every method has k replicates)
    for seed in seeds:
        for method in methods:
            run_dir = runs / f"{method}-s{seed}"
            if (method, seed) not in searched:
                t0 = time.perf_counter()
                run_search(a, cfg, method, seed, run_dir)
                row = search_row(method, seed, run_dir, machine)
                append_row(csv_path, row)
                searched.add((method, seed))
                rows.append(row)
                if not row["arch_id"]:
                    print(f"  search    {method:<22} seed {seed:<3} {row['detail']}", flush=True)
                    continue
                print(f"  search    {method:<22} seed {seed:<3} pick {row['arch_id']} "
                      f"({int(row['macs']) / 1e6:.1f}M MACs) score {float(row['score']):.4f}, "
                      f"{row['trials']} trials, {row['cost_units']} units "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
            row = next(r for r in rows if r["role"] == "search" and r["method"] == method
                       and int(r["seed"]) == seed)
            if not row["arch_id"]:
                continue
            spec = load_spec(_abs(row["detail"]))
            for rs in rseeds:
                retrain("reference", method, seed, row["arch_id"], spec, rs,
                        {"macs": row["macs"], "params": row["params"]})
    # 3. the regret pool: the top of the pooled random searches, first reference seed
    if "random" in methods:
        rows = read_rows(csv_path)
        pool = [r for r in rows if r["role"] == "pool"]
        if not pool:
            for r in pool_rows(rows, a.pool_top):
                append_row(csv_path, r)
                pool.append(r)
        for r in pool:
            retrain("reference", "random-pool", r["seed"], r["arch_id"],
                    load_spec(_abs(r["detail"])), rseeds[0],
                    {"macs": r["macs"], "params": r["params"]})
    report(csv_path)


# ---------------------------------------------------------------------------------------------
# the table (from the CSV alone)

_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t975(df: int) -> float:
    if df < 1:
        return math.nan
    try:
        from scipy.stats import t
        return float(t.ppf(0.975, df))
    except ImportError:  # scipy is not a dependency: the table (conservative between entries)
        return _T975[max(k for k in _T975 if k <= df)]


def t_interval(xs: list[float]) -> tuple[float, float, float]:
    """(mean, lo, hi): two-sided 95% Student-t interval of the mean (nan bounds for n < 2)."""
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, math.nan, math.nan
    h = t975(len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))
    return m, m - h, m + h


def _ci(lo: float, hi: float, signed: bool = False) -> str:
    if math.isnan(lo):
        return "-"
    f = "{:+.4f}" if signed else "{:.4f}"
    return f"[{f.format(lo)}, {f.format(hi)}]"


def summarize(csv_path: Path) -> dict:
    """Everything :func:`report` prints, as data: the settings (``cfg``, from the ``.json`` next
    to the CSV), the machines, per method its picks by seed and the statistics over them
    (``methods``: mean with its t-interval, the paired difference to random search, the regret),
    the baselines, the regret pool and the re-training noise, and the totals."""
    csv_path = Path(csv_path)
    rows = read_rows(csv_path)
    cfg_path = csv_path.with_suffix(".json")
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    machines = sorted({r["machine"] for r in rows if r.get("machine")})
    ref: dict[tuple[str, int], float] = {}
    for r in rows:
        if r["role"] in ("reference", "baseline"):
            ref[(r["arch_id"], int(r["ref_seed"]))] = float(r["score"])
    rseeds = cfg.get("ref_seeds") or sorted({int(r["ref_seed"]) for r in rows
                                             if r["role"] == "baseline"})
    first = rseeds[0] if rseeds else None
    pool = [r for r in rows if r["role"] == "pool"]
    pool_acc = [ref[(r["arch_id"], first)] for r in pool if (r["arch_id"], first) in ref]
    pool_best = max(pool_acc) if pool and len(pool_acc) == len(pool) else None
    picks: dict[str, dict[int, dict]] = {}
    no_pick = [f"{r['method']} s{r['seed']}" for r in rows if r["role"] == "search"
               and not r["arch_id"]]
    for r in rows:
        if r["role"] != "search" or not r["arch_id"]:
            continue
        accs = [ref[(r["arch_id"], s)] for s in rseeds if (r["arch_id"], s) in ref]
        if len(accs) < len(rseeds):
            continue  # not all reference seeds trained yet
        picks.setdefault(r["method"], {})[int(r["seed"])] = {
            "acc": statistics.fmean(accs), "acc1": ref[(r["arch_id"], first)],
            "proxy": float(r["score"]), "trials": int(r["trials"]),
            "units": float(r["cost_units"]), "wall": float(r["seconds"]),
            "compute": float(r["compute_s"] or 0), "arch": r["arch_id"]}
    order = [m for m in METHODS if m in picks] + sorted(set(picks) - set(METHODS))
    base = picks.get("random", {})
    methods: dict[str, dict] = {}
    for m in order:
        p = picks[m]
        seeds = sorted(p)
        st: dict = {"seeds": seeds, "ci": t_interval([p[s]["acc"] for s in seeds])}
        paired = [s for s in seeds if s in base]
        if m != "random" and len(paired) >= 1:
            d = [p[s]["acc"] - base[s]["acc"] for s in paired]
            st["vs_random"] = t_interval(d)
            st["vs_random_diffs"] = d
            st["wins"] = (sum(x > 0 for x in d), len(d))
        if pool_best is not None:
            st["regret"] = t_interval([pool_best - p[s]["acc1"] for s in seeds])
        for k in ("proxy", "trials", "units"):
            st[k] = statistics.fmean(p[s][k] for s in seeds)
        st["search_min"] = statistics.fmean(p[s]["wall"] for s in seeds) / 60
        methods[m] = st
    baselines = {}
    for name in sorted({r["method"] for r in rows if r["role"] == "baseline"}):
        rb = [r for r in rows if r["role"] == "baseline" and r["method"] == name]
        baselines[name] = {"macs": int(rb[0]["macs"]), "rows": rb,
                           "accs": [float(r["score"]) for r in rb]}
    var = [statistics.variance([ref[(p['arch'], s)] for s in rseeds])
           for m in picks.values() for p in m.values() if len(rseeds) > 1]
    return {
        "csv": csv_path, "cfg": cfg, "machines": machines, "rows": rows, "ref": ref,
        "ref_seeds": rseeds, "first": first, "pool": pool, "pool_best": pool_best,
        "picks": picks, "no_pick": no_pick, "order": order, "methods": methods,
        "baselines": baselines,
        "noise": math.sqrt(statistics.fmean(var)) if var else None, "noise_picks": len(var),
        "searches": sum(1 for r in rows if r["role"] == "search"),
        "retrainings": sum(1 for r in rows if r["role"] in ("reference", "baseline")),
        "hours": sum(float(r["seconds"] or 0) for r in rows
                     if r["role"] in ("search", "reference", "baseline")) / 3600,
        "finished": sorted(r["finished"] for r in rows if r.get("finished")),
    }


def report(csv_path: Path) -> None:
    s = summarize(csv_path)
    cfg, ref, first, pool, pool_best = s["cfg"], s["ref"], s["first"], s["pool"], s["pool_best"]
    print(f"\n## search efficiency: {s['csv'].name}")
    for m in s["machines"]:
        print(f"# machine: {m}")
    if len(s["machines"]) > 1:
        print("# WARNING: rows from more than one machine")
    if cfg.get("quick"):
        print(f"# SMOKE RUN (--quick): reference = {cfg.get('reference_steps')} steps on 1,000 "
              f"test images -- NOT a measurement")
    if cfg:
        rs = cfg["ref_seeds"]
        print(f"# space {cfg['space']}, MACs budget {cfg['flops']} (floor "
              f"{cfg['flops_min'] or 'default 0.7x'}) at target {cfg['target']}; equal cost "
              f"{cfg['cost_units']:g} first-rung units: ladder {cfg['ladder_trials']} trials, the "
              f"others {cfg['trials']}; proxy {' '.join(cfg['proxy']) or 'CPU default'}; "
              f"reference seeds {', '.join(map(str, rs))}; regret pool: top {cfg['pool_top']}")
    print(f"\n{'method':<10}{'seeds':>6}{'ref acc':>9}{'95% CI (t)':>20}{'vs random':>11}"
          f"{'95% CI (t, paired)':>21}{'wins':>6}{'regret':>9}{'95% CI (t)':>21}{'proxy':>8}"
          f"{'trials':>7}{'units':>7}{'search min':>11}")
    print("-" * 146)
    for m, st in s["methods"].items():
        mean, lo, hi = st["ci"]
        if "vs_random" in st:
            dm, dlo, dhi = st["vs_random"]
            vs, vs_ci = f"{dm:+.4f}", _ci(dlo, dhi, True)
            wins = f"{st['wins'][0]}/{st['wins'][1]}"
        else:
            vs, vs_ci, wins = "-", "-", "-"
        if "regret" in st:
            rm, rlo, rhi = st["regret"]
            reg, reg_ci = f"{rm:.4f}", _ci(rlo, rhi, True)
        else:
            reg, reg_ci = "-", "-"
        print(f"{m:<10}{len(st['seeds']):>6}{mean:>9.4f}{_ci(lo, hi):>20}{vs:>11}{vs_ci:>21}"
              f"{wins:>6}{reg:>9}{reg_ci:>21}{st['proxy']:>8.4f}{st['trials']:>7.1f}"
              f"{st['units']:>7.1f}{st['search_min']:>11.1f}")
    print()
    for name, b in s["baselines"].items():
        accs = b["accs"]
        sd = f"{statistics.stdev(accs):.4f}" if len(accs) > 1 else "-"
        each = ", ".join(f"{r['ref_seed']}: {float(r['score']):.4f}" for r in b["rows"])
        print(f"baseline {name:<20} {b['macs'] / 1e6:6.1f}M MACs: ref acc mean "
              f"{statistics.fmean(accs):.4f}, std {sd}, range {min(accs):.4f}-{max(accs):.4f} "
              f"over {len(accs)} seeds ({each})")
    if pool:
        got = ", ".join(f"{r['arch_id'][:8]} {ref[(r['arch_id'], first)]:.4f}"
                        if (r["arch_id"], first) in ref else f"{r['arch_id'][:8]} -" for r in pool)
        pb = f"{pool_best:.4f}" if pool_best is not None else "incomplete"
        print(f"regret pool: top {len(pool)} of the pooled random searches by proxy score, "
              f"re-trained with ref seed {first}: best {pb} ({got})")
    if s["noise"] is not None:
        print(f"re-training noise: pooled std over the reference seeds of the picks "
              f"{s['noise']:.4f} ({s['noise_picks']} picks)")
    if s["no_pick"]:
        print(f"searches without a pick (nothing completed): {', '.join(s['no_pick'])}")
    print(f"# {s['searches']} searches and {s['retrainings']} re-trainings in the CSV, "
          f"{s['hours']:.2f} h of wall time; "
          f"ref acc: mean over the reference seeds of the pick's test accuracy; 95% CI: "
          f"Student-t over sampler seeds; regret: pool best - pick (ref seed {first}); proxy: "
          f"the pick's search score (ladder: confirmed mean); units: first-rung trainings spent")
