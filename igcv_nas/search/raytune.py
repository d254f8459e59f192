"""The Ray Tune side of the search: a thin adapter over :class:`igcv_nas.search.engine.Engine`.

Ray is used through its public API only: a :class:`ray.tune.search.Searcher` that asks the
engine what to start and hands it every result, the trainable that runs one proxy evaluation
in a Ray worker (it knows nothing of Optuna), ASHA where the settings ask for it, and a
callback for the progress display and the time budget.
"""
from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import ray
from ray import tune
from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

from .engine import FINISHED, Engine
from .settings import ASHA_REDUCTION, SearchError


def connect(address: str | None, quiet: bool = True) -> dict:
    """Start a local Ray instance (all CPUs and GPUs of this machine) or join ``address``;
    returns the cluster's resources."""
    if not ray.is_initialized():
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        kw: dict[str, Any] = dict(include_dashboard=False, log_to_driver=not quiet,
                                  logging_level=logging.ERROR, configure_logging=True)
        # without an address always a new local instance: ray.init() alone would join a cluster
        # that `ray start` left running on this machine
        ray.init(address=address or "local", **kw)
    return ray.cluster_resources()


def release_memory() -> None:
    """Hand freed heap back to the OS. A reused Ray worker trains one architecture after
    another; glibc keeps the freed activation buffers of each in its arenas, so without this the
    worker grows by hundreds of MB per trial (measured: 0.15 GB per 3-step trial in-process,
    5 GB per worker after 3 CPU-budget trials) until the machine runs out of memory. Once per
    trial (about 0.1 s); epochs of one trial reuse the same buffers."""
    import ctypes
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def trainable(config: dict, splits: Any = None) -> None:
    """One proxy evaluation (an architecture at the first rung, or a ladder training)."""
    import torch

    from ..evaluate.proxy import ProxyBudget, evaluate
    from ..arch.spec import load
    from ..evaluate.train import plan

    torch.set_num_threads(max(1, int(config["threads"])))
    spec = load(config["proxy_spec_file"])
    budget = ProxyBudget.from_dict(config["budget"])
    ckpt = config["checkpoint"] if budget.mode != "zero-cost" else None
    _, total, epochs = plan(len(splits.train), budget.train)
    resumed = bool(ckpt and os.path.exists(ckpt))
    base = {"node": ray.get_runtime_context().get_node_id(), "final": False, "resumed": resumed,
            "macs": config["macs"]}
    t0 = time.perf_counter()

    def on_epoch(rep) -> None:
        if rep.steps < total:  # the last epoch is reported with every score below
            r = {"epoch": rep.epoch, "train_loss": rep.train_loss, **base}
            if not math.isnan(rep.val_acc):
                r["val_acc"] = rep.val_acc
            tune.report(r)

    try:
        scores = evaluate(spec, splits, budget, on_epoch, checkpoint=ckpt, resume=resumed)
    # a failed report still carries the score key (0.0): Ray checks every result for it
    except FloatingPointError as e:  # NonFiniteLoss, non-finite accuracy or score
        tune.report({**base, config["score"]: 0.0, "failed": f"{type(e).__name__}: {e}",
                     "epoch": 0})
        return
    finally:
        release_memory()
    bad = [k for k, v in scores.items() if not math.isfinite(v)]
    if bad:
        tune.report({**base, config["score"]: 0.0, "failed": f"score {bad[0]} is {scores[bad[0]]}",
                     "epoch": 0})
        return
    tune.report({**scores, **base, "final": True, "epoch": epochs,
                 "wall_seconds": time.perf_counter() - t0})


class EngineSearcher(Searcher):
    """Ray Tune's view of the engine: suggestions and results, nothing else."""

    def __init__(self, engine: Engine):
        super().__init__()
        self.engine = engine

    def suggest(self, trial_id: str) -> dict | None:
        cfg = self.engine.next_config(trial_id)
        return Searcher.FINISHED if cfg == FINISHED else cfg

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.engine.on_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        self.engine.on_complete(trial_id, result, error)

    def __getstate__(self) -> dict:
        # Ray pickles its Tuner state; the study journal is this searcher's state
        return {"journal": str(self.engine.run.journal)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w", encoding="utf-8") as f:
            f.write(f"state: {self.engine.run.journal}\n")

    def restore(self, checkpoint_path: str) -> None:
        raise RuntimeError("resume a search with igcv-search --resume, not Tuner.restore")


class RecordingASHA(ASHAScheduler):
    """ASHA that tells the engine which trials it stopped (PRUNED, reason asha)."""

    def __init__(self, engine: Engine, **kw: Any):
        super().__init__(**kw)
        self._stopped = engine.asha_stopped

    def on_trial_result(self, tune_controller, trial, result):
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and not result.get("final"):
            self._stopped.add(trial.trial_id)
        return action

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_stopped"}


def asha(engine: Engine, epochs: int) -> RecordingASHA:
    """Grace period past the learning-rate warm-up (at least one epoch after it), reduction
    factor 3."""
    warm = math.ceil(engine.budget.train.warmup * epochs)
    return RecordingASHA(engine, time_attr="epoch", metric="val_acc", mode="max", max_t=epochs,
                         grace_period=min(epochs, warm + 1), reduction_factor=ASHA_REDUCTION)


class Progress(Callback):
    def __init__(self, engine: Engine):
        self.engine = engine

    def _tell(self) -> None:
        if self.engine.on_change:
            self.engine.on_change(self.engine.summary())

    def on_trial_start(self, iteration, trials, trial, **info):
        self._tell()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._tell()

    def on_step_end(self, iteration, trials, **info):
        e = self.engine
        ts = e.settings.time_budget_s
        if ts and e._elapsed() >= ts:
            e.stopping_reason = "time-budget"

    def __getstate__(self) -> dict:
        return {}


def run(engine: Engine, splits: Any, resources: dict, epochs: int) -> bool:
    """Run the engine's trainings on Ray Tune; True when interrupted (Ctrl-C, or trainings left
    unfinished for a resume)."""
    s = engine.settings
    remaining = engine.remaining()
    time_left = None if s.time_budget_s is None else s.time_budget_s - engine.elapsed_before
    if remaining <= 0 or (time_left is not None and time_left <= 0):
        return False
    per_trial = {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial}
    slots = int(resources.get("CPU", 1) // s.cpus_per_trial)
    if s.gpus_per_trial > 0:
        slots = min(slots, int(resources.get("GPU", 0) // s.gpus_per_trial))
    if slots < 1:
        raise SearchError(f"the Ray cluster has {resources.get('CPU', 0):g} CPUs and "
                          f"{resources.get('GPU', 0):g} GPUs; a trial asks for "
                          f"{s.cpus_per_trial:g} CPUs and {s.gpus_per_trial:g} GPUs")
    concurrent = min(s.max_concurrent or slots, remaining)
    fn = tune.with_resources(tune.with_parameters(trainable, splits=splits), per_trial)
    tuner = tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(EngineSearcher(engine), max_concurrent=concurrent),
            scheduler=asha(engine, epochs) if s.uses_asha(epochs) else None,
            num_samples=remaining, time_budget_s=time_left, reuse_actors=True,
            trial_name_creator=lambda t: t.config.get("name", t.trial_id),
            trial_dirname_creator=lambda t: t.config.get("name", t.trial_id)),
        run_config=tune.RunConfig(
            name=f"attempt-{engine.attempt}", storage_path=str(engine.run.ray_dir()), verbose=0,
            failure_config=tune.FailureConfig(max_failures=s.max_failures),
            callbacks=[Progress(engine)]))
    engine.publish()
    interrupted = False
    try:
        tuner.fit()
    except KeyboardInterrupt:
        interrupted = True
    if (s.time_budget_s is not None and not interrupted
            and engine._elapsed() >= s.time_budget_s - 1):
        engine.stopping_reason = "time-budget"
        engine.stop_live()
    return bool(interrupted or (engine.live and engine.stopping_reason is None))
