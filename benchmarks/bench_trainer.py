"""Training throughput: the proxy trainer against a plain PyTorch loop, same models, same run.

Baseline: a ``torch.utils.data.DataLoader`` over a map-style dataset that, per sample, pads and
randomly crops, flips, converts to float and normalises (what torchvision's RandomCrop(32, 4) +
RandomHorizontalFlip + ToTensor + Normalize do), NCHW, fp32, SGD + Nesterov, plain loss.
Proxy: ``igcv_nas.train.ProxyTrainer`` (data as one tensor on the device, batched tensor
augmentation, channels_last where it helps, AMP on CUDA).

Both train the same CIFAR variants (mobilenet_v2, igcv3_d, igcv2 at ``--width``) on the same
CIFAR-10 images for the same number of steps; the table gives training images/s and the ratio.

    python benchmarks/bench_trainer.py --data-dir .data --steps 20 --batch 128
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from igcv_nas import zoo
from igcv_nas.build import build_model
from igcv_nas.data import load_splits
from igcv_nas.train import ProxyTrainer, TrainConfig, pick_device, seed_everything


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


def baseline(model: nn.Module, splits, steps: int, batch: int, device, workers: int) -> float:
    model = model.to(device).train()
    ds = PerSample(splits.train.x, splits.train.y, splits.mean, splits.std)
    dl = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                    persistent_workers=workers > 0)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    crit = nn.CrossEntropyLoss()
    it = iter(dl)
    done, t0 = -2, None  # two warm-up steps
    while done < steps:
        x, y = next(it)
        x, y = x.to(device), y.to(device)
        loss = crit(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        done += 1
        if done == 0:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def proxy(model: nn.Module, splits, steps: int, batch: int, device, channels_last: bool) -> float:
    cfg = TrainConfig(steps=steps + 2, batch_size=batch, device=str(device), lr=0.05,
                      channels_last=channels_last, eval_batch_size=batch)
    tr = ProxyTrainer(model, splits, cfg)
    # time training steps only (the proxy's epoch also evaluates); two warm-up steps first
    tr.total_steps = 2
    tr.train_epoch()
    tr.total_steps = steps + 2
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    tr.train_epoch()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--steps", type=int, default=20)
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
    print(f"# {args.steps} timed steps of batch {args.batch}, width {args.width}, CIFAR-10 32x32; "
          f"baseline DataLoader workers={args.workers}")
    header = f"{'model':<22}{'MACs':>10}{'baseline img/s':>16}{'proxy img/s':>14}{'proxy (cl) img/s':>18}{'speed-up':>10}"
    print(header)
    print("-" * len(header))
    from igcv_nas.cost import count
    for name in ("mobilenet_v2", "igcv3_d", "igcv2"):
        spec = zoo.ZOO[name](width=args.width, cifar=True)
        seed_everything(0)
        base = baseline(build_model(spec), splits, args.steps, args.batch, device, args.workers)
        seed_everything(0)
        prox = proxy(build_model(spec), splits, args.steps, args.batch, device, False)
        seed_everything(0)
        prox_cl = proxy(build_model(spec), splits, args.steps, args.batch, device, True)
        best = max(prox, prox_cl)
        print(f"{spec.name:<22}{count(spec).macs / 1e6:>9.1f}M{base:>16.0f}{prox:>14.0f}{prox_cl:>18.0f}"
              f"{best / base:>9.2f}x")


if __name__ == "__main__":
    main()
