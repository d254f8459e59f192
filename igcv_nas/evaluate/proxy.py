"""Proxy evaluation of one architecture: spec in, scores out (no Optuna, no Ray).

``evaluate(spec, splits, budget)`` builds the model and scores it with zero-cost proxies, proxy
training, or both (``budget.mode``). The default budgets per device are what ``igcv-search``
uses unless told otherwise:

* **GPU** (:data:`GPU_BUDGET`): a short full-data proxy: all 45,000 training images, 8 epochs,
  batch 512, channels_last + bf16/fp16 AMP.
* **CPU** (:data:`CPU_BUDGET`): a documented smaller budget so that a CPU search of the
  default space finishes in well under an hour on 2 cores: 6% of the training images (2,700)
  seen once, batch 32 (84 steps; lr 0.05 with 30% warm-up: with so few steps a higher rate
  diverges before it recovers), channels_last (faster than NCHW on the CPUs measured), scored
  once after training on 5,000 held-out images (binomial error ~0.006 at accuracy 0.25, against
  ~0.014 with the 1,000 images used before). See README.md for the measured rank correlation.

Both train without dropout (``ProxyBudget.dropout``) and validate only after the last epoch
unless an epoch-based scheduler (ASHA) needs per-epoch scores. Seeds: ``train.seed`` initialises
the model, ``train.data_seed`` chooses the training subset, data order and augmentation; a
search gives every candidate the same ``data_seed`` (common random numbers, so differences
between candidates are not differences between data orders), and confirmation re-trainings use
fresh seeds for both (:meth:`ProxyBudget.with_seeds`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from ..errors import InputError
from ..nn.build import build_model
from .data import Splits
from ..arch.spec import NetworkSpec
from .train import (CheckpointError, EpochReport, ProxyTrainer, TrainConfig, pick_device,
                    seed_everything)
from .zero_cost import PROXIES, score_all

MODES = ("training", "zero-cost", "both")


@dataclass(frozen=True)
class ProxyBudget:
    mode: str = "training"
    train: TrainConfig = field(default_factory=TrainConfig)
    zero_cost: tuple[str, ...] = tuple(PROXIES)
    zc_batch: int = 64
    val_size: int = 5000  # held-out images scored (a fixed subset of the val split)
    dropout: float | None = 0.0  # the proxy trains without dropout; None: the spec's own

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"proxy mode {self.mode!r}; accepted: {', '.join(MODES)}")
        unknown = [z for z in self.zero_cost if z not in PROXIES]
        if unknown:
            raise InputError(f"unknown zero-cost proxy {unknown[0]!r}; "
                             f"accepted: {', '.join(PROXIES)}")

    def to_dict(self) -> dict:
        return {"mode": self.mode, "train": self.train.to_dict(), "zero_cost": list(self.zero_cost),
                "zc_batch": self.zc_batch, "val_size": self.val_size, "dropout": self.dropout}

    @classmethod
    def from_dict(cls, d: dict) -> ProxyBudget:
        # budgets recorded before the proxy dropped dropout trained with the spec's own
        return cls(mode=d["mode"], train=TrainConfig.from_dict(d["train"]),
                   zero_cost=tuple(d["zero_cost"]), zc_batch=d["zc_batch"], val_size=d["val_size"],
                   dropout=d.get("dropout"))

    def with_seeds(self, seed: int, data_seed: int | None = None) -> ProxyBudget:
        """This budget with initialisation seed ``seed`` and data-order seed ``data_seed``
        (unchanged when None)."""
        t = replace(self.train, seed=seed)
        return replace(self, train=t if data_seed is None else replace(t, data_seed=data_seed))


# 84 steps of batch 32 over 2,700 images seen once (more images, fewer epochs at equal steps:
# EcoNAS), no dropout, scored once after training on 5,000 held-out images; chosen with
# benchmarks/bench_fidelity.py (README "Fidelity")
# evaluation in batches of 128: at 1,000 the activations of a wide net fall out of the CPU's
# caches (10,000 test images: 83 s at 1,000, 25 s at 128 on one core, igcv3_d_0.25_cifar)
CPU_BUDGET = ProxyBudget(train=TrainConfig(epochs=1, batch_size=32, lr=0.05, warmup=0.3,
                                           label_smoothing=0.0, train_fraction=0.06,
                                           channels_last=True, device="cpu",
                                           eval_each_epoch=False, eval_batch_size=128),
                         val_size=5000)
GPU_BUDGET = ProxyBudget(train=TrainConfig(epochs=8, batch_size=512, lr=0.4, train_fraction=1.0,
                                           channels_last=True, amp=True, device="cuda",
                                           eval_each_epoch=False), val_size=5000)


# Spearman rho of each zero-cost proxy against the reference training, per space, with the
# 95% bootstrap interval, as measured by benchmarks/bench_fidelity.py (README "Fidelity"). A
# proxy ranks "positively" in a space when the lower end of its interval is above 0; only such
# proxies are computed beside training (--proxy both). Spaces not measured have none.
ZERO_COST_FIDELITY: dict[str, dict[str, tuple[float, float, float]]] = {
    # mixed, the 20 architectures of benchmarks/results/fidelity_mixed_50M_cpu_default.csv
    # (MACs within 20% of 50M; reference: 10x the proxy's images), scored with the current
    # definitions; (rho, 2.5%, 97.5%) from 2,000 bootstrap resamples. None is positive.
    "mixed": {"synflow": (-0.622, -0.88, -0.22), "naswot": (-0.284, -0.72, 0.20),
              "grad_norm": (-0.681, -0.88, -0.35), "zico": (0.065, -0.42, 0.54)},
}


def validated_zero_cost(space: str) -> tuple[str, ...]:
    """The zero-cost proxies whose rank correlation the fidelity benchmark found positive
    (interval above 0) in ``space``.

    Args:
        space: a shipped space's name, as :data:`ZERO_COST_FIDELITY` records it.

    Returns:
        The names of those proxies (without the ``zc_`` prefix), in the table's order; empty
        for a space the benchmark did not measure. Raises nothing."""
    return tuple(k for k, (_, lo, _) in ZERO_COST_FIDELITY.get(space, {}).items() if lo > 0)


def default_budget(device: str = "auto", mode: str = "training") -> ProxyBudget:
    """The default proxy budget for ``device``: ``cpu`` or ``cuda`` as named (a search decides
    from the trial's GPUs; whether CUDA works is found where the trial runs, so a CPU-only
    driver can plan GPU trials), ``auto`` or ``cuda:N`` resolved on this machine.

    Args:
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        mode: ``training``, ``zero-cost`` or ``both`` (:data:`MODES`).

    Returns:
        The GPU budget for a CUDA device, the CPU budget otherwise, with ``mode`` and the
        training device set.

    Raises:
        InputError: an unknown ``mode``; a ``device`` other than ``cpu``/``cuda`` that is not a
            device, or ``cuda:N`` without CUDA on this machine (:func:`pick_device`)."""
    d = torch.device(device) if device in ("cpu", "cuda") else pick_device(device)
    b = GPU_BUDGET if d.type == "cuda" else CPU_BUDGET
    return replace(b, mode=mode, train=replace(b.train, device=str(d)))


def val_subset(splits: Splits, n: int) -> Splits:
    """``splits`` with a fixed, seeded subset of ``n`` validation images (all when fewer)."""
    if n >= len(splits.val):
        return splits
    # stratified by construction of the val split; a fixed prefix of a seeded permutation
    idx = torch.randperm(len(splits.val), generator=torch.Generator().manual_seed(12345))[:n]
    return replace(splits, val=splits.val.subset(idx.sort().values.numpy()))


def zero_cost_scores(spec: NetworkSpec, splits: Splits, budget: ProxyBudget,
                     seed: int = 0) -> dict[str, float]:
    """Each zero-cost proxy of ``budget`` on one fixed training batch (model at init, ``seed``).

    Args:
        spec: the architecture to score.
        splits: the data; ``budget.zc_batch`` images of its training split, chosen by ``seed``,
            normalised with its mean and std.
        budget: the proxies (``zero_cost``), the batch size (``zc_batch``) and the device
            (``train.device``).
        seed: seeds the model's initialisation and the choice of the batch.

    Returns:
        ``zc_<name>`` -> score, for each proxy of ``budget.zero_cost``.

    Raises:
        InputError: ``budget.train.device`` is not a usable device (:func:`pick_device`)."""
    device = pick_device(budget.train.device)
    seed_everything(seed)
    model = build_model(spec).to(device)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(splits.train), generator=g)[: budget.zc_batch].numpy()
    mean = torch.tensor(splits.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(splits.std).view(1, 3, 1, 1) * 255
    x = ((torch.as_tensor(splits.train.x[idx]).float() - mean) / std).to(device)
    y = torch.as_tensor(splits.train.y[idx]).to(device)
    return {f"zc_{k}": v for k, v in score_all(model, x, y, budget.zero_cost).items()}


def evaluate(spec: NetworkSpec, splits: Splits, budget: ProxyBudget,
             on_epoch: Callable[[EpochReport], bool | None] | None = None,
             checkpoint: str | None = None, resume: bool = False,
             on_damaged: Callable[[str], None] | None = None) -> dict[str, float]:
    """Scores of ``spec``: ``zc_<name>`` for zero-cost proxies; for training ``val_acc`` and
    ``val_loss`` (mean cross-entropy) on the ``budget.val_size`` held-out images after the last
    epoch, ``tse`` (sum of all mini-batch training losses, Ru et al. 2021), ``best_val_acc``
    (over the validated epochs), ``epochs``, ``train_seconds`` and ``images_per_s``.

    ``on_epoch`` is called after every epoch (return True to stop early); with ``checkpoint``
    the training state is saved there after each epoch (tagged with the architecture's id), and
    ``resume=True`` continues from it. A checkpoint that cannot be used (damaged, of another
    format, architecture or config: :class:`igcv_nas.evaluate.train.CheckpointError`, nothing
    in it executed) is raised, or with ``on_damaged`` told to it in one line and the training
    started again from the beginning.

    Args:
        spec: the architecture; built with ``budget.dropout`` unless that is None.
        splits: the data (:class:`igcv_nas.evaluate.data.Splits`): training on
            ``splits.train``, scoring on a fixed subset of ``budget.val_size`` images of
            ``splits.val``, normalised with ``splits.mean`` / ``splits.std``; its class count
            must be the spec's ``num_classes``.
        budget: the proxy budget (mode, training config, zero-cost proxies, sizes).
        on_epoch: called with each epoch's :class:`EpochReport`; True stops the training.
        checkpoint: a file the training state is saved to after each epoch (None: not saved).
        resume: continue from ``checkpoint`` when it exists.
        on_damaged: told of an unusable checkpoint (one line); the training then starts again.

    Returns:
        The scores: ``zc_<name>`` (zero-cost modes) and ``val_acc``, ``val_loss``, ``tse``,
        ``best_val_acc``, ``epochs``, ``train_seconds``, ``images_per_s`` (training modes).

    Raises:
        InputError: the spec's class count is not the data set's, or the budget's device is
            not usable.
        CheckpointError: ``resume`` with an unusable ``checkpoint`` and no ``on_damaged``.
        FloatingPointError: the training loss (:class:`~igcv_nas.evaluate.train.NonFiniteLoss`)
            or the validation accuracy or loss is not finite.
    """
    if spec.num_classes != splits.num_classes:
        raise InputError(f"spec has {spec.num_classes} classes, the data set {splits.num_classes}")
    scores: dict[str, float] = {}
    if budget.dropout is not None and spec.dropout != budget.dropout:
        spec = replace(spec, dropout=budget.dropout)
    if budget.mode in ("zero-cost", "both"):
        scores.update(zero_cost_scores(spec, splits, budget, budget.train.seed))
    if budget.mode in ("training", "both"):
        tag = {"arch_id": spec.arch_id}

        def fresh() -> ProxyTrainer:
            seed_everything(budget.train.seed)
            return ProxyTrainer(build_model(spec), val_subset(splits, budget.val_size),
                                budget.train)
        trainer = fresh()
        if resume and checkpoint:
            try:
                trainer.load(checkpoint, tag)
            except CheckpointError as e:
                if on_damaged is None:
                    raise
                on_damaged(f"{e}; trained again from the start")
                trainer = fresh()

        def hook(rep: EpochReport) -> bool | None:
            if checkpoint:
                trainer.save(checkpoint, tag)
            return on_epoch(rep) if on_epoch else None

        res = trainer.fit(hook)
        scores.update(val_acc=res.val_acc, val_loss=res.val_loss, tse=res.tse,
                      best_val_acc=res.best_val_acc, epochs=res.epochs,
                      train_seconds=res.seconds, images_per_s=res.images_per_s)
        if not (math.isfinite(res.val_acc) and math.isfinite(res.val_loss)):
            raise FloatingPointError("validation accuracy or loss is not finite")
    return scores
