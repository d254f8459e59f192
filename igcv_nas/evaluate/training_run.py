"""A final training of one architecture into an output directory, as two library calls:
:func:`prepare_training` checks everything, :meth:`PreparedTraining.run` trains. ``igcv-train``
is parse -> these calls -> print, so a training started from Python gets exactly the command's
guarantees::

    from igcv_nas.evaluate.training_run import prepare_training

    prepared = prepare_training("igcv3_d_0.25_cifar", "trained/d", epochs=200)
    outcome = prepared.run()
    print(outcome.result["test_acc"], outcome.warnings)

The recipe (the defaults of :func:`prepare_training`): the proxy trainer
(:mod:`igcv_nas.evaluate.train`) at full budget, SGD with Nesterov momentum, batch 128, peak lr 0.1
after a linear warm-up of :func:`default_warmup` epochs then cosine decay, weight decay 5e-4 (none
on BN and biases), label smoothing 0.1, channels_last, mixed precision on CUDA, evaluation in
batches of :data:`EVAL_BATCH`.

:func:`prepare_training` creates nothing: it checks the recipe's values, reads and validates the
spec, checks ``out`` (a new or empty folder; no leftover ``OUT.partial`` unless ``resume``, and
its checkpoint when ``resume``), picks the device and loads the data set; a spec at another
resolution becomes the data set's variant (:func:`igcv_nas.arch.space.to_cifar`), and on a resume
the spec in ``OUT.partial`` must be that architecture. A refusal is an
:class:`igcv_nas.errors.IGCVError` (one line, the flag it is about named as ``igcv-train`` names
it). :meth:`PreparedTraining.run` then trains in ``OUT.partial`` (``spec.json``,
``checkpoint.pt`` after every epoch, ``history.csv``), scores the test split once, writes
``weights.pt`` and ``result.json`` and renames ``OUT.partial`` to ``out``. A failure (a
:class:`~igcv_nas.evaluate.train.NonFiniteLoss` included) leaves nothing of a new training; an
interruption after an epoch keeps ``OUT.partial`` to resume (:attr:`PreparedTraining.resumable`).
"""
from __future__ import annotations

import inspect
import io
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from ..errors import InputError
from ..fileio import write_bytes, write_json, write_text
from ..arch.sources import resolve_valid
from ..arch.spec import NetworkSpec, SpecError, from_dict

if TYPE_CHECKING:
    from .data import Splits
    from .train import EpochReport, ProxyTrainer, StepReport, TrainConfig

_logger = logging.getLogger("igcv_nas.evaluate.training_run")

DEFAULT_DATASET = "cifar10"
WARMUP_EPOCHS, WARMUP_FRACTION = 5.0, 0.1  # default warm-up: min(5 epochs, 10% of the epochs)
# Evaluation batch: a batch of 1,000 32x32 images makes every activation of a wide IGCV net
# hundreds of MB on a CPU, far out of cache (and each one freshly mapped by the allocator): the
# 10,000 test images took 83 s at batch 1,000 and 25 s at batch 128 (igcv3_d_0.25_cifar, one
# core). On CUDA a large batch is what is fast.
EVAL_BATCH = {"cpu": 128, "cuda": 1000}
CHANCE_FACTOR = 1.5  # an accuracy <= 1.5 / classes is at chance level
VAL_SPLIT = 5000  # validation images split off the training set (val_size scores a subset)
HISTORY_HEADER = "epoch,steps,train_loss,val_acc,seconds\n"

__all__ = ["CHANCE_FACTOR", "EVAL_BATCH", "Display", "PreparedTraining",
           "TrainingOutcome", "check_out", "check_recipe", "default_warmup", "partial_dir",
           "prepare_training", "result_warnings", "train_spec"]


def default_warmup(epochs: int) -> float:
    """Warm-up epochs when none are given: min(5, epochs / 10)."""
    return min(WARMUP_EPOCHS, WARMUP_FRACTION * epochs)


def partial_dir(out: str | os.PathLike) -> Path:
    """Where a training into ``out`` lives until it ends."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


# ---------------------------------------------------------------------------------------------
# checks

def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_recipe(epochs: int, batch_size: int, lr: float, weight_decay: float,
                 label_smoothing: float, warmup_epochs: float | None, train_fraction: float,
                 val_size: int) -> None:
    """InputError (one line naming the ``igcv-train`` flag) for a recipe value it refuses."""
    for flag, v in (("--epochs", epochs), ("--batch-size", batch_size),
                    ("--val-size", val_size)):
        if not (isinstance(v, int) and not isinstance(v, bool)) or v < 1:
            raise InputError(f"{flag} {v}; accepted: an integer >= 1")
    checks = (("--lr", lr, "a number > 0", lambda x: x > 0),
              ("--weight-decay", weight_decay, "a number >= 0", lambda x: x >= 0),
              ("--label-smoothing", label_smoothing, "0 <= value < 1", lambda x: 0 <= x < 1),
              ("--train-fraction", train_fraction, "0 < value <= 1", lambda x: 0 < x <= 1))
    for flag, v, accepted, ok in checks:
        if not (_number(v) and ok(v) and math.isfinite(v)):
            raise InputError(f"{flag} {v}; accepted: {accepted}")
    if warmup_epochs is not None and not (_number(warmup_epochs)
                                          and 0 <= warmup_epochs < epochs):
        raise InputError(f"--warmup-epochs {warmup_epochs}; accepted: 0 <= value < "
                         f"--epochs ({epochs})")


def check_out(out: str | os.PathLike, resume: bool) -> None:
    """InputError unless ``out`` can receive a training: a new or empty folder, no leftover
    ``OUT.partial`` (unless ``resume``), and with ``resume`` a checkpoint in ``OUT.partial``."""
    out = Path(out)
    part = partial_dir(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "a finished training" if (out / "result.json").is_file() else "not an empty folder"
        raise InputError(f"--out {out} exists ({what}); accepted: a new or empty folder")
    if resume and not (part / "checkpoint.pt").is_file():
        raise InputError(f"--resume: {part / 'checkpoint.pt'} does not exist (no interrupted "
                         f"training of --out {out})")
    if not resume and part.exists():
        raise InputError(f"{part} holds an interrupted training of --out {out}; continue it with "
                         "--resume, or delete it")


def result_warnings(hist: list[EpochReport], val_acc: float, test_acc: float,
                    classes: int) -> list[str]:
    """What makes a training not a result: divergence, no learning, chance accuracy."""
    out = []
    chance = 1.0 / classes
    limit = CHANCE_FACTOR / classes
    if hist and hist[-1].train_loss >= math.log(classes):
        out.append(f"the final training loss {hist[-1].train_loss:.4f} is not below ln({classes}) "
                   f"= {math.log(classes):.4f}, the loss of a uniform guess: the training "
                   "diverged or did not learn")
    if len(hist) >= 2 and hist[-1].train_loss > 1.5 * min(h.train_loss for h in hist):
        best = min(hist, key=lambda h: h.train_loss)
        out.append(f"the training loss rose from {best.train_loss:.4f} (epoch {best.epoch}) to "
                   f"{hist[-1].train_loss:.4f} (epoch {hist[-1].epoch}): it diverged")
    if val_acc <= limit or test_acc <= limit:
        out.append(f"val acc {val_acc:.4f} and test acc {test_acc:.4f} are at chance level "
                   f"(1/{classes} = {chance:.4f}; <= {CHANCE_FACTOR}/{classes} = {limit:.4f} "
                   "counts as chance): the network has not learned, this is not a result")
    return out


# ---------------------------------------------------------------------------------------------
# preparing

def prepare_training(spec: NetworkSpec | str | os.PathLike, out: str | os.PathLike, *,
                     dataset: str = DEFAULT_DATASET, data_dir: str | os.PathLike | None = None,
                     resume: bool = False, epochs: int = 200, batch_size: int = 128,
                     lr: float = 0.1, weight_decay: float = 5e-4, label_smoothing: float = 0.1,
                     warmup_epochs: float | None = None, train_fraction: float = 1.0,
                     val_size: int = 5000, device: str = "auto", seed: int = 0,
                     log: Callable[[str], None] | None = None) -> PreparedTraining:
    """Check a final training completely and return it prepared (nothing created).

    ``spec``: a :class:`~igcv_nas.arch.spec.NetworkSpec`, a spec JSON file (a plain spec or a
    document holding one, e.g. a trial's spec.json or an igcv-export spec.json) or a zoo name.
    ``out``: the output directory (new or empty). ``resume``: continue the interrupted training
    in ``OUT.partial``. The recipe keywords are ``igcv-train``'s flags, with its defaults
    (``warmup_epochs`` None: :func:`default_warmup`). ``log``: where
    messages go (the variant trained; default this module's logger).

    Raises an :class:`igcv_nas.errors.IGCVError` for anything the training cannot use, in the
    order ``igcv-train`` checks it, with nothing created.

    Args:
        spec: the architecture (a spec, a spec JSON file or a zoo name).
        out: the output directory (new or empty).
        dataset: ``cifar10``, ``cifar100`` or an image-folder path.
        data_dir: where the data sets are; None: the default data directory.
        resume: continue the interrupted training in ``OUT.partial``.
        epochs: training epochs (``--epochs``).
        batch_size: training images per step.
        lr: peak learning rate.
        weight_decay: weight decay.
        label_smoothing: label smoothing.
        warmup_epochs: epochs of learning-rate warm-up; None: :func:`default_warmup`.
        train_fraction: fraction of the training split used.
        val_size: validation images scored each epoch.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: the model initialisation and data seed.
        log: where messages go; None: this module's logger.

    Returns:
        The :class:`PreparedTraining` (the data set's variant of the spec where it had to be
        changed); :meth:`PreparedTraining.run` trains it.

    Raises:
        InputError: a recipe value out of range; an ``out`` that exists and is not an empty
            folder, or holds an interrupted training without ``resume``; ``resume`` without a
            checkpoint, with an unreadable ``OUT.partial/spec.json`` or one of another
            architecture; an unusable ``device``.
        SpecError: ``spec`` cannot be read or does not pass validation.
        DataError: the data set cannot be found, downloaded or read."""
    from .data import load_splits, resolve_data_dir
    from ..arch.space import to_cifar
    from .train import TrainConfig, pick_device
    say = log or log_info
    out = Path(out)
    check_recipe(epochs, batch_size, lr, weight_decay, label_smoothing, warmup_epochs,
                 train_fraction, val_size)
    net = resolve_valid(spec)
    check_out(out, resume)
    dev = pick_device(device)
    warmup = warmup_epochs if warmup_epochs is not None else default_warmup(epochs)
    extra = {}
    if "data_seed" in {f.name for f in fields(TrainConfig)}:
        extra["data_seed"] = seed
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                      label_smoothing=label_smoothing, warmup=warmup / epochs,
                      schedule="onecycle", train_fraction=train_fraction, seed=seed,
                      device=str(dev), channels_last=True, amp=True,
                      eval_batch_size=EVAL_BATCH.get(dev.type, 1000), **extra)
    splits = load_splits(dataset, resolve_data_dir(data_dir), val_size=VAL_SPLIT, seed=0)
    res = int(splits.train.x.shape[-1])
    if (net.input_size, net.num_classes) != (res, splits.num_classes):
        net = to_cifar(net, splits.num_classes, res)
        say(f"training the {dataset} variant ({res}x{res}, stem stride 1, stage 2 not "
            f"downsampling, {splits.num_classes} classes): arch id {net.arch_id}")
    part = partial_dir(out)
    if resume:
        try:
            trained = from_dict(json.loads((part / "spec.json").read_text())["spec"])
        except (OSError, ValueError, KeyError, SpecError) as e:
            raise InputError(f"--resume: {part / 'spec.json'} cannot be read: {e}") from None
        if trained.arch_id != net.arch_id:
            raise InputError(f"--resume: {part} trains arch {trained.arch_id}, not "
                             f"{net.arch_id}")
    return PreparedTraining(net, out, dataset, splits, cfg, warmup, val_size, seed, resume, dev,
                            say)


def log_info(message: str) -> None:
    _logger.info(message)


def train_spec(spec: NetworkSpec | str | os.PathLike, out: str | os.PathLike,
               display: Callable[[ProxyTrainer], Display] | None = None,
               **kw: Any) -> TrainingOutcome:
    """:func:`prepare_training` (same keywords) and :meth:`PreparedTraining.run` in one call.

    Args:
        spec: the architecture (a spec, a spec JSON file or a zoo name).
        out: the output directory.
        display: makes the progress display from the trainer (:meth:`PreparedTraining.run`).
        **kw: the keywords of :func:`prepare_training`.

    Returns:
        The :class:`TrainingOutcome`: ``out``, its ``result.json`` and the test images scored.

    Raises:
        InputError: a refused recipe, ``out`` or resume (:func:`prepare_training`), or a
            checkpoint that does not fit (``--resume: ...``).
        SpecError: ``spec`` cannot be read or does not pass validation.
        DataError: the data set cannot be used.
        NonFiniteLoss: the training loss diverged."""
    return prepare_training(spec, out, **kw).run(display)


class Display(Protocol):
    """What :meth:`PreparedTraining.run` reports progress to (``igcv-train``'s live display)."""

    def on_step(self, r: StepReport) -> None: ...

    def on_epoch(self, rep: EpochReport, seconds: float) -> None: ...

    def close(self) -> None: ...


@dataclass
class TrainingOutcome:
    """A finished training: ``out`` (the output directory), ``result`` (``result.json``) and
    the number of test images scored."""
    out: Path
    result: dict
    test_images: int

    @property
    def warnings(self) -> list[str]:
        """Why this training is not a result (empty when it is one)."""
        return list(self.result["warnings"])


@dataclass
class PreparedTraining:
    """A checked training (:func:`prepare_training`); :meth:`run` trains it.

    Attributes:
        spec: what is trained (the data set's variant where it had to be).
        out: the output directory.
        dataset: the data set's name or folder.
        splits: the loaded train/val/test splits.
        config: the training recipe.
        warmup_epochs: epochs of learning-rate warm-up.
        val_size: validation images scored each epoch.
        seed: the seed of the model initialisation.
        resume: whether it continues the training in ``OUT.partial``.
        device: the torch device it trains on.
        say: where messages go.
        trainer: the :class:`ProxyTrainer` once :meth:`run` built it; None before.
    """
    spec: NetworkSpec  # what is trained (the data set's variant where it had to be)
    out: Path
    dataset: str
    splits: Splits
    config: TrainConfig
    warmup_epochs: float
    val_size: int
    seed: int
    resume: bool
    device: Any  # torch.device
    say: Callable[[str], None] = field(repr=False)
    trainer: ProxyTrainer | None = field(default=None, repr=False)

    @property
    def partial(self) -> Path:
        """``OUT.partial``: where the training lives until it ends."""
        return partial_dir(self.out)

    @property
    def resumable(self) -> bool:
        """Whether ``OUT.partial`` holds a checkpoint to continue from (after an interruption)."""
        return (self.partial / "checkpoint.pt").is_file()

    def run(self, display: Callable[[ProxyTrainer], Display] | None = None) -> TrainingOutcome:
        """Train, score the test split once, write ``out`` (module doc) and return the outcome.
        ``display(trainer)`` makes the progress display (called once the trainer is built;
        closed before the test split is scored and on every exit). Raises InputError
        (``--resume: ...``) when the checkpoint does not fit; NonFiniteLoss when the loss
        diverges. On any exception a new training leaves nothing; an interrupted one keeps
        ``OUT.partial`` once it holds a checkpoint."""
        import torch

        from ..nn.build import build_model
        from .proxy import val_subset
        from .train import GpuBatches, ProxyTrainer, seed_everything
        out, part, cfg, splits, say = self.out, self.partial, self.config, self.splits, self.say
        created = not self.resume
        shown: list[Display] = []

        def close() -> None:
            while shown:
                shown.pop().close()
        try:
            part.mkdir(parents=True, exist_ok=True)
            write_json(part / "spec.json", {"spec": self.spec.to_dict(),
                                            "arch_id": self.spec.arch_id,
                                            "recipe": cfg.to_dict(), "dataset": self.dataset})
            seed_everything(self.seed)
            self.trainer = trainer = ProxyTrainer(build_model(self.spec),
                                                  val_subset(splits, self.val_size), cfg)
            if self.resume:
                try:
                    trainer.load(part / "checkpoint.pt", {"arch_id": self.spec.arch_id})
                except ValueError as e:
                    raise InputError(f"--resume: {e}") from None
                say(f"resuming at epoch {trainer.epoch + 1}/{trainer.epochs}")
            say(f"{trainer.epochs} epoch{'s' if trainer.epochs != 1 else ''} of "
                f"{trainer.steps_per_epoch} steps (batch {cfg.batch_size}, "
                f"{len(trainer.train.y):,} training images, {trainer.val.n:,} validation "
                f"images), warm-up {self.warmup_epochs:g} epochs, peak lr {cfg.lr:g}, on "
                f"{self.device}")
            if display is not None:
                shown.append(display(trainer))
            t_epoch = [time.perf_counter()]

            def on_epoch(rep: EpochReport) -> None:
                trainer.save(part / "checkpoint.pt", {"arch_id": self.spec.arch_id})
                write_text(part / "history.csv", HISTORY_HEADER + "".join(
                    f"{h.epoch},{h.steps},{h.train_loss:.5f},{h.val_acc:.5f},{h.seconds:.2f}\n"
                    for h in trainer.history))
                now = time.perf_counter()
                for d in shown:
                    d.on_epoch(rep, now - t_epoch[0])
                t_epoch[0] = now

            def on_step(r: StepReport) -> None:
                for d in shown:
                    d.on_step(r)

            t0 = time.perf_counter()
            if "on_step" in inspect.signature(trainer.fit).parameters:
                r = trainer.fit(on_epoch, on_step=on_step)
            else:  # a trainer without step callbacks: epoch reports only
                r = trainer.fit(on_epoch)
            close()
            say(f"scoring the {len(splits.test):,} test images")
            te = time.perf_counter()
            test = GpuBatches(splits.test.x, splits.test.y, splits.mean, splits.std,
                              trainer.device, 0, False)
            test_acc = trainer.evaluate(test)
            test_s = time.perf_counter() - te
            warns = result_warnings(trainer.history, r.val_acc, test_acc, splits.num_classes)
            buf = io.BytesIO()
            torch.save({"state_dict": trainer.model.state_dict(), "arch_id": self.spec.arch_id,
                        "trained": True, "source": f"igcv-train --out {out}"}, buf)
            write_bytes(part / "weights.pt", buf.getvalue())
            result = {"arch_id": self.spec.arch_id, "dataset": self.dataset, "epochs": r.epochs,
                      "val_acc": r.val_acc, "best_val_acc": r.best_val_acc,
                      "test_acc": test_acc, "chance_acc": 1.0 / splits.num_classes,
                      "warnings": warns, "train_images": len(trainer.train.y),
                      "seconds": r.seconds, "test_seconds": test_s,
                      "wall_seconds_this_run": time.perf_counter() - t0,
                      "recipe": cfg.to_dict()}
            write_json(part / "result.json", result)
            if out.is_dir():  # an empty folder given as out
                out.rmdir()
            os.replace(part, out)
        except KeyboardInterrupt:
            close()
            if not self.resumable and created:
                shutil.rmtree(part, ignore_errors=True)
            raise
        except BaseException:
            close()
            if created:
                shutil.rmtree(part, ignore_errors=True)
            raise
        return TrainingOutcome(out, result, len(splits.test))
