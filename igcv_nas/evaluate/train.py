"""Fast proxy trainer. Knows nothing about Optuna or Ray: a model, data splits and a config in,
per-epoch validation accuracy out.

What makes it fast (measured by ``benchmarks/bench_trainer.py``):

* the whole training set lives as one uint8 tensor on the training device (GPU when there),
  padded once for random crops; each batch is cropped and flipped with tensor indexing, no
  per-sample Python and no DataLoader workers;
* channels_last memory format, mixed precision (bf16, or fp16 with loss scaling) on CUDA;
* SGD with Nesterov momentum, label smoothing, one-cycle or linear-decay learning rate, and
  ``torch.compile`` as an option.

Reproducible: one ``torch.Generator`` seeded by ``data_seed`` drives the training subset,
shuffling and augmentation; ``seed`` is the model-initialisation seed (applied by the caller
through :func:`seed_everything`). Keeping the two apart lets a search give every candidate the
same data order (common random numbers) while re-trainings draw fresh initial weights and data
orders. With the same seeds two CPU runs give identical weights.

Scores: the mean validation loss beside the accuracy (:meth:`ProxyTrainer.evaluate_full`), and
``tse``, the sum of the training losses of every mini-batch (Ru et al. 2021, "training speed
estimation"; lower is better). With ``eval_each_epoch=False`` only the last epoch is scored.
The full training state (model, optimizer, schedule, generator and global RNG states, history)
is a dict from :meth:`ProxyTrainer.state_dict`, saved atomically by :meth:`ProxyTrainer.save`
after any epoch; :meth:`ProxyTrainer.load` resumes so that the rest of the run matches an
uninterrupted one.

Checkpoints run no code when read. They hold only tensors, numbers, strings, lists and dicts, so
:func:`read_checkpoint` loads them with ``torch.load(weights_only=True)``, whose unpickler
refuses every other class: a planted pickle that would call ``os.system`` is refused in one line
(:class:`CheckpointError`) and never executed. Each checkpoint carries its format
(:data:`CHECKPOINT_FORMAT`) and what it belongs to (``tag``: the architecture's id, and the
training config with its seeds and steps); one of another format, of another architecture or
config, or damaged (a truncated file, a bad zip record checksum) is refused the same way.
"""
from __future__ import annotations

import math
import os
import time
import zipfile
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InputError
from .data import Splits
from ..fileio import atomic_write

SCHEDULES = ("onecycle", "linear")


# the checkpoint format :meth:`ProxyTrainer.save` writes; a checkpoint of another format (or of
# none: written before 0.2, when checkpoints were read with weights_only=False) is refused
CHECKPOINT_FORMAT = "igcv-nas/train-state@2"


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite."""


class CheckpointError(InputError):
    """A checkpoint that cannot be used: not a file of :data:`CHECKPOINT_FORMAT`, damaged, or
    of another training (one line naming the file). Nothing in it was executed."""


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The training state in ``path``, read with ``torch.load(weights_only=True)`` (no pickled
    object but tensors and plain values is accepted, so reading runs no code). CheckpointError
    naming the file when it is missing, damaged, or not of :data:`CHECKPOINT_FORMAT`."""
    import pickle
    try:
        s = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message: boilerplate paragraphs around the one that names what was refused
        parts = [" ".join(p.split()) for p in str(e).split("\n\n") if p.strip()]
        named = [p for p in parts if not p.startswith(("Weights only load failed", "Check the"))]
        cause = (named[0] if named else type(e).__name__)[:160]
        raise CheckpointError(f"checkpoint {path} is refused: weights-only loading found "
                              f"something other than tensors and plain values in it, or no "
                              f"checkpoint at all ({cause}); nothing in it was run, and it was "
                              f"not written by this igcv-nas (delete it to train from the "
                              f"start)") from None
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        # a truncated or damaged zip (torch checks each record's CRC-32) or legacy bytes
        msg = " ".join(str(e).split())[:160] or type(e).__name__
        raise CheckpointError(f"checkpoint {path} is damaged or truncated ({msg})") from None
    fmt = s.get("format") if isinstance(s, dict) else None
    if fmt != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {fmt!r} (an older igcv-nas or "
                              f"another program wrote it); accepted: {CHECKPOINT_FORMAT}")
    body = {k: v for k, v in s.items() if k != "sha256"}
    if s.get("sha256") != state_digest(body):
        raise CheckpointError(f"checkpoint {path} is damaged: its content does not match the "
                              f"SHA-256 it was written with")
    return s


def state_digest(obj: object) -> str:
    """SHA-256 of a training state's content (every tensor's dtype, shape and bytes, every plain
    value), independent of the file's layout: torch.load does not check the records' CRCs, so a
    flipped bit inside a tensor would otherwise load as a different weight."""
    import hashlib
    h = hashlib.sha256()

    def walk(o: object) -> None:
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(o.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        elif isinstance(o, dict):
            h.update(b"{")
            for k in sorted(o, key=repr):
                h.update(repr(k).encode())
                walk(o[k])
            h.update(b"}")
        elif isinstance(o, (list, tuple)):
            h.update(b"[")
            for v in o:
                walk(v)
            h.update(b"]")
        else:
            h.update(f"{type(o).__name__}:{o!r};".encode())
    walk(obj)
    return h.hexdigest()


@dataclass(frozen=True)
class TrainConfig:
    """A proxy-training recipe. ``steps`` (when set) overrides ``epochs``.

    Attributes:
        epochs: training epochs (at least 1 unless ``steps`` is given).
        steps: optimiser steps in all; None: ``epochs`` epochs.
        batch_size: training images per step.
        lr: peak learning rate of SGD (> 0).
        momentum: SGD momentum (below 1).
        nesterov: Nesterov momentum.
        weight_decay: weight decay of the conv and linear weights (none on BN and biases).
        label_smoothing: label smoothing of the cross-entropy (below 1).
        schedule: the learning-rate schedule, ``onecycle`` or ``linear``.
        warmup: fraction of the steps rising to the peak lr (below 1).
        train_fraction: fraction of the training split used, in (0, 1].
        crop_padding: padding of the random-crop augmentation (0: none).
        flip: random horizontal flips.
        seed: the model initialisation (the caller seeds the global RNGs with it).
        data_seed: the training subset, data order and augmentation.
        eval_each_epoch: validate after every epoch (False: only after the last).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        amp: mixed precision on CUDA (bf16 where supported, else fp16).
        channels_last: train in the channels-last memory format.
        compile: ``torch.compile`` the model.
        eval_batch_size: images per validation batch.

    Raises:
        InputError: (on construction) an unknown ``schedule``, or a value out of its range as
            listed above."""
    epochs: int = 5
    steps: int | None = None
    batch_size: int = 256
    lr: float = 0.2
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    schedule: str = "onecycle"
    warmup: float = 0.15  # fraction of steps rising to the peak lr (onecycle and linear)
    train_fraction: float = 1.0
    crop_padding: int = 4
    flip: bool = True
    seed: int = 0          # model initialisation (the caller seeds the global RNGs with it)
    data_seed: int = 0     # training subset, data order and augmentation
    eval_each_epoch: bool = True  # False: validate only after the last epoch
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    compile: bool = False
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise InputError(f"schedule={self.schedule!r}; accepted: {', '.join(SCHEDULES)}")
        if not 0 < self.train_fraction <= 1:
            raise InputError(f"train_fraction={self.train_fraction} must be in (0, 1]")
        if self.epochs < 1 and not self.steps:
            raise InputError(f"epochs={self.epochs} must be >= 1 (or give steps)")
        if self.batch_size < 1:
            raise InputError(f"batch_size={self.batch_size} must be >= 1")
        if self.steps is not None and self.steps < 1:
            raise InputError(f"steps={self.steps} must be >= 1")
        for name in ("lr", "momentum", "weight_decay", "warmup", "label_smoothing"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InputError(f"{name}={v} must be a finite number >= 0")
        if self.lr <= 0:
            raise InputError(f"lr={self.lr} must be > 0")
        if not self.warmup < 1 or not self.label_smoothing < 1 or not self.momentum < 1:
            raise InputError(f"warmup={self.warmup}, label_smoothing={self.label_smoothing} "
                             f"and momentum={self.momentum} must each be below 1")
        if self.eval_batch_size < 1:
            raise InputError(f"eval_batch_size={self.eval_batch_size} must be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        if "data_seed" not in d and "seed" in d:  # written before the two seeds were separate
            d["data_seed"] = d["seed"]
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise InputError(f"unknown training setting {unknown[0]!r}")
        return cls(**d)


@dataclass
class EpochReport:
    epoch: int  # 1-based
    steps: int
    train_loss: float
    val_acc: float  # nan when this epoch was not validated (eval_each_epoch=False)
    images: int  # training images seen so far
    seconds: float  # training + evaluation time so far (excludes time before a restore)
    val_loss: float = float("nan")
    tse: float = 0.0  # sum of the training losses of every mini-batch so far


@dataclass
class StepReport:
    step: int  # 1-based, counted over the whole training
    total_steps: int
    epoch: int  # 1-based epoch the step belongs to
    loss: float
    images: int  # training images seen so far
    seconds: float  # training time of this run so far (excludes time before a restore)


@dataclass
class TrainResult:
    val_acc: float
    best_val_acc: float
    epochs: int
    steps: int
    images: int
    seconds: float
    history: list[EpochReport] = field(default_factory=list)
    stopped_early: bool = False
    val_loss: float = float("nan")
    tse: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def pick_device(device: str = "auto") -> torch.device:
    """``auto``: the current CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        d = None
    if d is None or d.type not in ("cpu", "cuda"):
        raise InputError(f"device {device!r}; accepted: auto, cpu, cuda, cuda:N")
    if d.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    return d


def seed_everything(seed: int) -> None:
    """Seed the global RNGs (model initialisation draws from them)."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


class GpuBatches:
    """A data split as one tensor on the device, batched with random crop + flip."""

    def __init__(self, x, y, mean, std, device: torch.device, padding: int, flip: bool):
        self.device = device
        self.x = torch.as_tensor(x).to(device)
        self.y = torch.as_tensor(y).to(device)
        self.pad = padding
        self.flip = flip
        if padding:
            self.x_pad = F.pad(self.x, (padding,) * 4, mode="reflect" if self.x.is_floating_point()
                               else "constant")
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        self.n = len(self.y)

    def normalize(self, xb: torch.Tensor, channels_last: bool) -> torch.Tensor:
        out = (xb.float() - self.mean) / self.std
        return out.contiguous(memory_format=torch.channels_last) if channels_last else out

    def augment(self, idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Random crop (from the zero-padded images) and horizontal flip of the images ``idx``."""
        b, h = len(idx), self.x.shape[-1]
        if self.pad:
            span = 2 * self.pad + 1
            oy = torch.randint(span, (b,), generator=gen).to(self.device)
            ox = torch.randint(span, (b,), generator=gen).to(self.device)
            ar = torch.arange(h, device=self.device)
            rows = (oy[:, None] + ar)[:, None, :, None]
            cols = (ox[:, None] + ar)[:, None, None, :]
            chans = torch.arange(3, device=self.device)[None, :, None, None]
            xb = self.x_pad[idx[:, None, None, None], chans, rows, cols]
        else:
            xb = self.x[idx]
        if self.flip:
            f = (torch.rand(b, generator=gen) < 0.5).to(self.device)
            xb = torch.where(f[:, None, None, None], xb.flip(3), xb)
        return xb


def plan(n_train: int, cfg: TrainConfig) -> tuple[int, int, int]:
    """``(steps per epoch, total steps, epochs)`` of ``cfg`` on a training split of ``n_train``
    images (after ``train_fraction``; the ragged last batch of an epoch is dropped)."""
    n = (min(n_train, max(cfg.batch_size, int(n_train * cfg.train_fraction)))
         if cfg.train_fraction < 1 else n_train)
    steps_per_epoch = max(1, n // cfg.batch_size)
    total = cfg.steps or cfg.epochs * steps_per_epoch
    return steps_per_epoch, total, math.ceil(total / steps_per_epoch)


class ProxyTrainer:
    """Trains ``model`` on ``splits.train`` and reports accuracy on ``splits.val`` each epoch.

    Args:
        model: the network to train (moved to the config's device).
        splits: the data: ``train`` (a ``train_fraction`` subset when below 1), ``val`` and the
            normalisation ``mean`` / ``std``.
        config: the recipe; None: :class:`TrainConfig` defaults.

    Raises:
        InputError: the config's device is not a device or CUDA is not available for it
            (:func:`pick_device`).

    Training (:meth:`fit`, :meth:`train_epoch`) raises :class:`NonFiniteLoss` when the loss
    becomes NaN or infinite; :meth:`load` raises :class:`CheckpointError` for a checkpoint it
    cannot use."""

    def __init__(self, model: nn.Module, splits: Splits, config: TrainConfig | None = None):
        self.cfg = cfg = config or TrainConfig()
        self.device = pick_device(cfg.device)
        self.gen = torch.Generator().manual_seed(cfg.data_seed)
        tr = splits.train
        if cfg.train_fraction < 1:
            k = max(cfg.batch_size, int(len(tr) * cfg.train_fraction))
            g = torch.Generator().manual_seed(cfg.data_seed + 7)
            sel = torch.randperm(len(tr), generator=g)[:k]
            tr = tr.subset(sel.sort().values.numpy())
        self.train = GpuBatches(tr.x, tr.y, splits.mean, splits.std, self.device,
                                cfg.crop_padding, cfg.flip)
        self.val = GpuBatches(splits.val.x, splits.val.y, splits.mean, splits.std, self.device,
                              0, False)
        self.steps_per_epoch, self.total_steps, self.epochs = plan(len(splits.train), cfg)

        self.model = model.to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        decay, no_decay = [], []
        for p in self.model.parameters():
            (decay if p.ndim > 1 else no_decay).append(p)  # no weight decay on BN and biases
        self.opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                                    {"params": no_decay, "weight_decay": 0.0}],
                                   lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self._lr_factor)
        self.use_amp = cfg.amp and self.device.type == "cuda"
        self.amp_dtype = (torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported()
                          else torch.float16)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.epoch = 0
        self.step = 0
        self.seconds = 0.0
        self.tse = 0.0
        self.history: list[EpochReport] = []

    # -- schedule ---------------------------------------------------------------------------
    def _lr_factor(self, step: int) -> float:
        t = self.total_steps
        w = max(1, int(self.cfg.warmup * t))
        if step < w:
            return (step + 1) / w
        rest = (step - w) / max(1, t - w)
        if self.cfg.schedule == "linear":
            return max(0.0, 1.0 - rest)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, rest)))  # onecycle: cosine annealing down

    # -- one epoch --------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast("cuda", dtype=self.amp_dtype, enabled=self.use_amp)

    def train_epoch(self, on_step: Callable[[StepReport], None] | None = None) -> float:
        """One epoch; the mean training loss. ``on_step`` after every step (a host sync each)."""
        cfg, bs = self.cfg, self.cfg.batch_size
        self.model.train()
        order = torch.randperm(self.train.n, generator=self.gen).to(self.device)
        n_steps = min(self.steps_per_epoch, self.total_steps - self.step)
        total = torch.zeros((), device=self.device)
        t0 = time.perf_counter()
        for i in range(n_steps):
            idx = order[i * bs:(i + 1) * bs]
            xb = self.train.normalize(self.train.augment(idx, self.gen), cfg.channels_last)
            yb = self.train.y[idx]
            with self._autocast():
                loss = self.criterion(self.forward(xb), yb)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
            self.sched.step()
            self.step += 1
            total += loss.detach()
            if on_step is not None:
                on_step(StepReport(self.step, self.total_steps, self.epoch + 1,
                                   float(loss.detach()), self.step * bs,
                                   self.seconds + time.perf_counter() - t0))
        self.tse += float(total)
        mean = float(total) / max(1, n_steps)
        if not math.isfinite(mean):
            raise NonFiniteLoss(f"training loss is {mean} in epoch {self.epoch + 1} "
                                f"(lr {self.cfg.lr}, batch {bs})")
        return mean

    def evaluate(self, batches: GpuBatches | None = None) -> float:
        """Top-1 accuracy (fraction) on the validation split (or on ``batches``)."""
        return self.evaluate_full(batches)[0]

    @torch.no_grad()
    def evaluate_full(self, batches: GpuBatches | None = None) -> tuple[float, float]:
        """``(top-1 accuracy, mean cross-entropy without label smoothing)`` on the validation
        split (or on ``batches``)."""
        b = batches or self.val
        self.model.eval()
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        loss = torch.zeros((), dtype=torch.float64, device=self.device)
        for i in range(0, b.n, self.cfg.eval_batch_size):
            xb = b.normalize(b.x[i:i + self.cfg.eval_batch_size], self.cfg.channels_last)
            yb = b.y[i:i + self.cfg.eval_batch_size]
            with self._autocast():
                out = self.forward(xb)
            correct += (out.argmax(1) == yb).sum()
            loss += F.cross_entropy(out.float(), yb, reduction="sum").double()
        return int(correct) / b.n, float(loss) / b.n

    def fit(self, on_epoch: Callable[[EpochReport], bool | None] | None = None,
            on_step: Callable[[StepReport], None] | None = None) -> TrainResult:
        """Train until the budget is spent or ``on_epoch`` returns True (early stop); the last
        epoch is always validated."""
        stopped = False
        while self.step < self.total_steps:
            t0 = time.perf_counter()
            loss = self.train_epoch(on_step)
            last_epoch = self.step >= self.total_steps
            acc, vloss = (self.evaluate_full() if self.cfg.eval_each_epoch or last_epoch
                          else (float("nan"), float("nan")))
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds += time.perf_counter() - t0
            self.epoch += 1
            rep = EpochReport(self.epoch, self.step, loss, acc,
                              self.step * self.cfg.batch_size, self.seconds, vloss, self.tse)
            self.history.append(rep)
            if on_epoch is not None and on_epoch(rep):
                stopped = self.step < self.total_steps
                break
        if self.history and math.isnan(self.history[-1].val_acc):  # stopped before the end
            acc, vloss = self.evaluate_full()
            self.history[-1] = replace(self.history[-1], val_acc=acc, val_loss=vloss)
        last = self.history[-1] if self.history else None
        scored = [h.val_acc for h in self.history if not math.isnan(h.val_acc)]
        return TrainResult(last.val_acc if last else 0.0, max(scored, default=0.0), self.epoch,
                           self.step, self.step * self.cfg.batch_size, self.seconds,
                           list(self.history), stopped,
                           last.val_loss if last else float("nan"), self.tse)

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self, tag: dict | None = None) -> dict:
        """The whole training state as tensors and plain values (what :meth:`save` writes);
        ``tag``: what the state belongs to (plain values), checked by :meth:`load`."""
        s = {"format": CHECKPOINT_FORMAT, "tag": dict(tag or {}),
             "model": self.model.state_dict(), "opt": self.opt.state_dict(),
             "sched": self.sched.state_dict(), "scaler": self.scaler.state_dict(),
             "gen": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
             "epoch": self.epoch, "step": self.step, "seconds": self.seconds, "tse": self.tse,
             "history": [asdict(h) for h in self.history], "config": self.cfg.to_dict()}
        if torch.cuda.is_available():
            s["cuda_rng"] = torch.cuda.get_rng_state_all()
        s["sha256"] = state_digest(s)
        return s

    def load_state_dict(self, s: dict) -> None:
        if TrainConfig.from_dict(s["config"]) != self.cfg:
            raise InputError("checkpoint was written with a different training config")
        self.model.load_state_dict(s["model"])
        self.opt.load_state_dict(s["opt"])
        self.sched.load_state_dict(s["sched"])
        self.scaler.load_state_dict(s["scaler"])
        self.gen.set_state(s["gen"])
        torch.set_rng_state(s["torch_rng"])
        if "cuda_rng" in s and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(s["cuda_rng"])
        self.epoch, self.step, self.seconds = s["epoch"], s["step"], s["seconds"]
        self.tse = s.get("tse", 0.0)
        self.history = [EpochReport(**h) for h in s["history"]]

    def save(self, path: str | os.PathLike, tag: dict | None = None) -> None:
        """Write the training state atomically (temporary file, fsync, rename), with ``tag``
        (what it belongs to, e.g. ``{"arch_id": ...}``)."""
        atomic_write(path, lambda f: torch.save(self.state_dict(tag), f), binary=True)

    def load(self, path: str | os.PathLike, tag: dict | None = None) -> None:
        """Continue from the state in ``path`` (:func:`read_checkpoint`: no code runs).
        CheckpointError naming the file when it is not a checkpoint of this format, is damaged,
        or belongs to another training (a ``tag`` value or the config differs)."""
        s = read_checkpoint(path, self.device)
        want, have = dict(tag or {}), s.get("tag")
        if not isinstance(have, dict):
            raise CheckpointError(f"checkpoint {path} has no tag of what it belongs to")
        for k, v in want.items():
            if have.get(k) != v:
                raise CheckpointError(f"checkpoint {path} belongs to {k} {have.get(k)!r}, not "
                                      f"{v!r}")
        try:
            self.load_state_dict(s)
        except CheckpointError:
            raise
        except InputError as e:
            raise CheckpointError(f"checkpoint {path}: {e}") from None
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
            msg = " ".join(str(e).split())[:160] or type(e).__name__
            raise CheckpointError(f"checkpoint {path} does not fit this training "
                                  f"({type(e).__name__}: {msg})") from None
