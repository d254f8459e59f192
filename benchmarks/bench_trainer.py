"""Training throughput: the proxy trainer against a plain PyTorch loop, same models, same run.

Baseline: a ``torch.utils.data.DataLoader`` over a map-style dataset that, per sample, pads and
randomly crops, flips, converts to float and normalises (what torchvision's RandomCrop(32, 4) +
RandomHorizontalFlip + ToTensor + Normalize do), NCHW, fp32, SGD + Nesterov, plain loss.
Proxy: ``igcv_nas.evaluate.train.ProxyTrainer`` (data as one tensor on the device, batched tensor
augmentation, channels_last where it helps, AMP on CUDA).

Both train the same CIFAR variants (mobilenet_v2, igcv3_d, igcv2 at ``--width``) on the same
CIFAR-10 images. The three runners (baseline, proxy NCHW, proxy channels_last) take turns:
``--rounds`` rounds of ``--steps`` steps each, so that a change in machine speed (frequent on a
shared VM) hits all of them alike; the table gives the median round's training images/s, the
ratio of the faster proxy to the baseline and the range of that ratio over the rounds.

    python benchmarks/bench_trainer.py --data-dir .data --steps 4 --rounds 5 --batch 64
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from igcv_nas.arch import zoo
from igcv_nas.nn.build import build_model
from igcv_nas.evaluate.data import load_splits
from igcv_nas.evaluate.train import ProxyTrainer, TrainConfig, pick_device, seed_everything


class PerSample(Dataset):
    def __init__(self, x, y, mean, std, pad=4):
        self.x, self.y, self.pad = x, y, pad
        self.mean = np.asarray(mean, np.float32)[:, None, None]
        self.std = np.asarray(std, np.float32)[:, None, None]
        self.rng = np.random.default_rng(0)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = np.pad(self.x[i], ((0, 0), (self.pad,) * 2, (self.pad,) * 2))
        oy, ox = self.rng.integers(0, 2 * self.pad + 1, 2)
        img = img[:, oy:oy + 32, ox:ox + 32]
        if self.rng.random() < 0.5:
            img = img[:, :, ::-1]
        img = (img.astype(np.float32) / 255.0 - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(img)), int(self.y[i])


class Baseline:
    """The plain loop; ``run(n)`` trains ``n`` steps and returns the seconds they took."""

    def __init__(self, model: nn.Module, splits, batch: int, device, workers: int):
        self.model, self.device = model.to(device).train(), device
        ds = PerSample(splits.train.x, splits.train.y, splits.mean, splits.std)
        self.dl = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                             drop_last=True, persistent_workers=workers > 0)
        self.opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True,
                                   weight_decay=5e-4)
        self.crit = nn.CrossEntropyLoss()
        self.it = iter(self.dl)

    def run(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            x, y = next(self.it)
            x, y = x.to(self.device), y.to(self.device)
            loss = self.crit(self.model(x), y)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0


class Proxy:
    """``ProxyTrainer`` stepping through its epoch ``n`` steps at a time (training steps only)."""

    def __init__(self, model: nn.Module, splits, total: int, batch: int, device,
                 channels_last: bool):
        cfg = TrainConfig(steps=total, batch_size=batch, device=str(device), lr=0.05,
                          channels_last=channels_last, eval_batch_size=batch)
        self.tr, self.device = ProxyTrainer(model, splits, cfg), device

    def run(self, n: int) -> float:
        self.tr.total_steps = self.tr.step + n
        t0 = time.perf_counter()
        self.tr.train_epoch()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per runner per round")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of baseline, proxy, proxy (cl)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the baseline")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    splits = load_splits("cifar10", args.data_dir, val_size=5000, seed=0)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "-"
    print(f"# bench_trainer: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device} {gpu}")
    print(f"# {args.rounds} rounds of {args.steps} timed steps of batch {args.batch} per runner, "
          f"interleaved (median round), width {args.width}, CIFAR-10 32x32; baseline DataLoader "
          f"workers={args.workers}")
    header = (f"{'model':<22}{'MACs':>10}{'baseline img/s':>16}{'proxy img/s':>14}"
              f"{'proxy (cl) img/s':>18}{'speed-up':>10}  (per round)")
    print(header)
    print("-" * len(header))
    from igcv_nas.arch.cost import count
    for name in ("mobilenet_v2", "igcv3_d", "igcv2"):
        spec = zoo.ZOO[name](width=args.width, cifar=True)
        seed_everything(0)
        total = 2 + args.rounds * args.steps
        runners = [Baseline(build_model(spec), splits, args.batch, device, args.workers),
                   Proxy(build_model(spec), splits, total, args.batch, device, False),
                   Proxy(build_model(spec), splits, total, args.batch, device, True)]
        for r in runners:  # two warm-up steps each
            r.run(2)
        # rounds: each runner in turn, so a change in machine speed hits all three alike
        secs: list[list[float]] = [[], [], []]
        for _ in range(args.rounds):
            for i, r in enumerate(runners):
                secs[i].append(r.run(args.steps))
        base, prox, prox_cl = (args.steps * args.batch / statistics.median(t) for t in secs)
        ratios = [b / min(p, c) for b, p, c in zip(*secs)]  # same steps: time ratio
        print(f"{spec.name:<22}{count(spec).macs / 1e6:>9.1f}M{base:>16.0f}{prox:>14.0f}"
              f"{prox_cl:>18.0f}"
              f"{max(prox, prox_cl) / base:>9.2f}x  ({min(ratios):.2f}-{max(ratios):.2f}x)")


if __name__ == "__main__":
    main()
