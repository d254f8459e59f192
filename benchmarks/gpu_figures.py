"""The measurements behind ``benchmarks/gpu_check.sh``, one figure per line.

Every figure is printed as ``FIGURE <name> = <value> <unit>  (<context>)`` so that the output of
a GPU session can be grepped and pasted. Subcommands:

* ``env``      -- python, torch, CUDA device, the project's dependencies (exit 2 when torch or,
  without ``--cpu``, CUDA is missing; what is missing is named).
* ``trainer``  -- training images/s of ``igcv_nas.evaluate.train.ProxyTrainer`` (data on the device,
  batched augmentation, channels_last, AMP) against a plain PyTorch ``DataLoader`` loop on the
  same model (both runners are ``benchmarks/bench_trainer.py``'s), interleaved rounds, median.
* ``amp``      -- ``ProxyTrainer`` images/s with AMP on and off (channels_last both), same model.
* ``search-summary RUN_DIR`` -- figures of a finished ``igcv-search`` run.
* ``fidelity`` -- a small fidelity sample at the GPU default budget: ``--n`` architectures of
  the ``mixed`` space in [0.8, 1] x ``--budget`` (bench_fidelity's sampler and halves); scores:
  the GPU default proxy (``igcv_nas.evaluate.proxy.GPU_BUDGET``: 8 epochs of all of half A, batch
  512, AMP) and the CPU default proxy's recipe run on the GPU (2,700 images of half A seen once),
  both scored on the 5,000 validation images; reference: the GPU budget with ``--ref-epochs``
  (16 = 2x) epochs on half B, scored on the 10,000 test images. Spearman rho of each proxy
  against the reference over the architectures finished (also when stopped by a timeout:
  SIGTERM prints what is done). Rows are appended to ``--csv`` (resumable).
"""
from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import signal
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def figure(name: str, value, unit: str = "", context: str = "") -> None:
    v = f"{value:.4g}" if isinstance(value, float) else str(value)
    u = f" {unit}" if unit else ""
    c = f"  ({context})" if context else ""
    print(f"FIGURE {name} = {v}{u}{c}", flush=True)


def missing(what: str, how: str) -> None:
    print(f"MISSING {what}: {how}", flush=True)


# ---------------------------------------------------------------------------------------------

def cmd_env(a) -> int:
    import platform
    print(f"python {sys.executable} {platform.python_version()}", flush=True)
    try:
        import torch
    except ImportError:
        missing("torch", "no torch in this python; install a CUDA build of torch for this "
                         "machine's driver (https://pytorch.org/get-started/locally/) or point "
                         "PYTHON= at an interpreter that has one")
        return 2
    cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, CUDA available {cuda}",
          flush=True)
    if cuda:
        p = torch.cuda.get_device_properties(0)
        print(f"device 0: {p.name}, {p.total_memory / 2**30:.0f} GiB, capability "
              f"{p.major}.{p.minor}, {torch.cuda.device_count()} device(s), bf16 "
              f"{torch.cuda.is_bf16_supported()}", flush=True)
    bad = 0
    for mod, pip in (("numpy", "numpy"), ("yaml", "pyyaml"), ("optuna", "optuna"),
                     ("ray", "'ray[tune]'"), ("pandas", "pandas"), ("igcv_nas", "-e . --no-deps")):
        try:
            m = importlib.import_module(mod)
            print(f"{mod} {getattr(m, '__version__', '')}", flush=True)
        except ImportError as e:
            missing(mod, f"{e}; pip install {pip}")
            bad += 1
    if not cuda and not a.cpu:
        missing("CUDA", "torch.cuda.is_available() is False (CPU-only torch build or no driver); "
                        "run with --cpu to check the plumbing on the CPU")
        return 2
    return 2 if bad else 0


# ---------------------------------------------------------------------------------------------

def _splits(a):
    from igcv_nas.evaluate.data import load_splits
    return load_splits("cifar10", a.data_dir, val_size=5000, seed=0, download_ok=False)


def _device(a):
    import torch
    return torch.device("cpu" if a.cpu else "cuda")


def cmd_trainer(a) -> int:
    import torch

    import bench_trainer as bt
    from igcv_nas.arch import zoo
    from igcv_nas.nn.build import build_model
    from igcv_nas.evaluate.train import seed_everything
    device, splits = _device(a), _splits(a)
    for name in a.models.split(","):
        spec = zoo.ZOO[name](width=a.width, cifar=True)
        seed_everything(0)
        total = 2 + a.rounds * a.steps
        runners = [bt.Baseline(build_model(spec), splits, a.batch, device, a.workers),
                   bt.Proxy(build_model(spec), splits, total, a.batch, device, True)]
        for r in runners:
            r.run(2)
        secs: list[list[float]] = [[], []]
        for _ in range(a.rounds):
            for i, r in enumerate(runners):
                secs[i].append(r.run(a.steps))
        base, prox = (a.steps * a.batch / statistics.median(t) for t in secs)
        ctx = (f"{spec.name}, batch {a.batch}, {a.rounds}x{a.steps} steps, {device}"
               f"{' ' + torch.cuda.get_device_name(0) if device.type == 'cuda' else ''}")
        figure(f"trainer.{name}.dataloader_img_per_s", base, "img/s",
               f"plain DataLoader loop, {a.workers} workers, NCHW fp32; {ctx}")
        figure(f"trainer.{name}.proxy_img_per_s", prox, "img/s",
               f"ProxyTrainer channels_last, AMP {'on' if device.type == 'cuda' else 'n/a'}; {ctx}")
        figure(f"trainer.{name}.speedup", prox / base, "x", "target >= 3x on GPU")
    return 0


class _AmpProxy:
    def __init__(self, model, splits, total: int, batch: int, device, amp: bool):
        from igcv_nas.evaluate.train import ProxyTrainer, TrainConfig
        cfg = TrainConfig(steps=total, batch_size=batch, device=str(device), lr=0.05,
                          channels_last=True, amp=amp, eval_batch_size=batch)
        self.tr, self.device = ProxyTrainer(model, splits, cfg), device

    def run(self, n: int) -> float:
        import torch
        self.tr.total_steps = self.tr.step + n
        t0 = time.perf_counter()
        self.tr.train_epoch()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def cmd_amp(a) -> int:
    from igcv_nas.arch import zoo
    from igcv_nas.nn.build import build_model
    from igcv_nas.evaluate.train import seed_everything
    device, splits = _device(a), _splits(a)
    for name in a.models.split(","):
        spec = zoo.ZOO[name](width=a.width, cifar=True)
        seed_everything(0)
        total = 2 + a.rounds * a.steps
        runners = [_AmpProxy(build_model(spec), splits, total, a.batch, device, False),
                   _AmpProxy(build_model(spec), splits, total, a.batch, device, True)]
        for r in runners:
            r.run(2)
        secs: list[list[float]] = [[], []]
        for _ in range(a.rounds):
            for i, r in enumerate(runners):
                secs[i].append(r.run(a.steps))
        off, on = (a.steps * a.batch / statistics.median(t) for t in secs)
        ctx = f"{spec.name}, ProxyTrainer channels_last, batch {a.batch}, {device}"
        figure(f"amp.{name}.off_img_per_s", off, "img/s", ctx)
        figure(f"amp.{name}.on_img_per_s", on, "img/s", ctx + " (bf16 where supported, else fp16)")
        figure(f"amp.{name}.speedup", on / off, "x", "AMP on / off")
    return 0


# ---------------------------------------------------------------------------------------------

def cmd_search_summary(a) -> int:
    import pandas as pd
    d = Path(a.run_dir)
    if not (d / "trials.csv").is_file():
        missing("search results", f"{d}/trials.csv does not exist (the search did not finish)")
        return 2
    df = pd.read_csv(d / "trials.csv")
    meta = json.loads((d / "run.json").read_text())
    first = df[df.rung == 0] if "rung" in df else df
    done = first[first.status == "complete"]
    figure("search.trials_complete", len(done), "", f"of {meta['settings']['trials']} asked; "
           f"status {meta.get('status')}; gpus per trial {meta['settings']['gpus_per_trial']}")
    figure("search.elapsed_s", float(meta.get("elapsed_s", 0.0)), "s", "igcv-search's own clock")
    if len(done):
        figure("search.best_val_acc", float(done.val_acc.max()), "", "first rung")
        figure("search.median_train_s", float(done.train_seconds.median()), "s", "per trial")
        figure("search.median_img_per_s", float(done.images_per_s.median()), "img/s",
               "per trial, training")
        wall = done.wall_seconds - done.train_seconds
        figure("search.median_outside_training_s", float(wall.median()), "s",
               "per trial, in the worker outside training (build, data to device, checkpoint)")
    return 0


# ---------------------------------------------------------------------------------------------

class _Stop(Exception):
    pass


def cmd_fidelity(a) -> int:
    import torch

    from bench_fidelity import HALF, halves, sample_band, spearman
    from igcv_nas.arch.cost import count
    from igcv_nas.evaluate.proxy import CPU_BUDGET, GPU_BUDGET, ProxyBudget, evaluate
    from igcv_nas.arch.space import load_space, to_cifar
    from igcv_nas.units import parse_count

    def stop(*_):
        raise _Stop
    signal.signal(signal.SIGTERM, stop)
    dev = "cpu" if a.cpu else "cuda"
    gpu = replace(GPU_BUDGET.train, device=dev)
    cpu_recipe = replace(CPU_BUDGET.train, device=dev, train_fraction=2700 / HALF)
    ref = replace(gpu, epochs=a.ref_epochs)
    if a.cpu:  # plumbing check only
        gpu, cpu_recipe = replace(gpu, steps=4, batch_size=64), replace(cpu_recipe, steps=4)
        ref = replace(ref, steps=4, batch_size=64)
    roles = {"gpu_default": (gpu, 5000), "cpu_default_recipe": (cpu_recipe, 5000),
             "reference": (ref, 10_000)}
    b = parse_count(a.budget, "--budget")
    specs = sample_band(load_space("mixed"), int(0.8 * b), b, a.n, 0)
    prox_splits, ref_splits = halves(_splits(a))
    out = Path(a.csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    fields = ["arch_id", "macs", "role", "val_acc", "seconds"]
    done = {}
    if out.is_file():
        done = {(r["arch_id"], r["role"]): r for r in csv.DictReader(out.open())}
    print(f"# fidelity sample: {a.n} mixed archs in [0.8, 1] x {b:,} MACs; gpu_default = "
          f"GPU_BUDGET ({gpu.epochs} epochs x {HALF:,} images, batch {gpu.batch_size}, AMP "
          f"{gpu.amp}); reference {ref.epochs} epochs on half B, test images; {dev}"
          f"{' (--cpu: 4 steps each, plumbing only)' if a.cpu else ''}", flush=True)
    try:
        for i, spec in enumerate(specs):
            cs = to_cifar(spec, 10)
            for role, (cfg, val) in roles.items():
                if (spec.arch_id, role) in done:
                    continue
                seed = 1000 if role == "reference" else 0
                budget = ProxyBudget(mode="training", train=replace(cfg, seed=seed, data_seed=seed),
                                     val_size=val)
                t0 = time.perf_counter()
                s = evaluate(cs, ref_splits if role == "reference" else prox_splits, budget)
                if dev == "cuda":
                    torch.cuda.synchronize()
                secs = time.perf_counter() - t0
                row = {"arch_id": spec.arch_id, "macs": count(spec).macs, "role": role,
                       "val_acc": f"{s['val_acc']:.5f}", "seconds": f"{secs:.2f}"}
                new = not out.is_file()
                with out.open("a", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=fields)
                    if new:
                        w.writeheader()
                    w.writerow(row)
                done[(spec.arch_id, role)] = row
                print(f"  arch {i} {spec.arch_id} {role:<19} acc {s['val_acc']:.4f} "
                      f"({row['seconds']} s, {s['images_per_s']:.0f} img/s)", flush=True)
    except _Stop:
        print("# stopped by the timeout; figures over the architectures finished", flush=True)
    finally:
        ids = [sp.arch_id for sp in specs if all((sp.arch_id, r) in done for r in roles)]
        for role in roles:
            secs = [float(done[(i, role)]["seconds"]) for i in ids]
            if secs:
                figure(f"fidelity.{role}.seconds_per_arch", statistics.fmean(secs), "s",
                       f"mean over {len(secs)} archs")
        y = [float(done[(i, "reference")]["val_acc"]) for i in ids]
        for role in ("gpu_default", "cpu_default_recipe"):
            if len(ids) >= 3:
                x = [float(done[(i, role)]["val_acc"]) for i in ids]
                figure(f"fidelity.{role}.spearman_vs_reference", spearman(x, y), "",
                       f"n = {len(ids)} (tiny sample: a sanity check, not the fidelity table)")
        if y:
            figure("fidelity.reference.acc_range", f"{min(y):.3f}-{max(y):.3f}", "", "test images")
    return 0


# ---------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", action="store_true", help="plumbing check on the CPU (tiny sizes)")
    ap.add_argument("--data-dir", default=os.environ.get("IGCV_DATA_DIR"))
    sub = ap.add_subparsers(dest="what", required=True)
    sub.add_parser("env")
    for name in ("trainer", "amp"):
        p = sub.add_parser(name)
        p.add_argument("--models", default="mobilenet_v2,igcv3_d")
        p.add_argument("--width", type=float, default=1.0)
        p.add_argument("--batch", type=int, default=256)
        p.add_argument("--steps", type=int, default=20)
        p.add_argument("--rounds", type=int, default=3)
        p.add_argument("--workers", type=int, default=4)
    p = sub.add_parser("search-summary")
    p.add_argument("run_dir")
    p = sub.add_parser("fidelity")
    p.add_argument("--n", type=int, default=6)
    p.add_argument("--budget", default="80M")
    p.add_argument("--ref-epochs", type=int, default=16)
    p.add_argument("--csv", default="gpu_fidelity.csv")
    a = ap.parse_args()
    if a.what != "env" and not a.cpu:
        import torch
        if not torch.cuda.is_available():
            missing("CUDA", "torch.cuda.is_available() is False; use --cpu for a plumbing check")
            return 2
    fn = {"env": cmd_env, "trainer": cmd_trainer, "amp": cmd_amp,
          "search-summary": cmd_search_summary, "fidelity": cmd_fidelity}[a.what]
    return fn(a)


if __name__ == "__main__":
    sys.exit(main())
