"""The search driver: Optuna proposes, Ray Tune evaluates, the run directory records.

Data flow: the space samples a spec (define-by-run) -> its analytic cost (and predicted latency)
is checked against the budgets *before* anything trains -> an in-budget architecture not seen
before is handed to Ray Tune, whose trainable calls :func:`igcv_nas.proxy.evaluate` on the data
set's variant of the spec -> the result is told to the Optuna study (journal file in the run
directory) -> the trials table, best and Pareto files are rewritten from the study.

This module does not know how blocks are built (the space and the proxy do) and the trainer
does not know about Optuna or Ray (the trainable below adapts it).

Trial bookkeeping (``status`` user attribute of each study trial; see :mod:`igcv_nas.runstore`):

* ``over-budget``: sampled, cost above a budget; told COMPLETE with the worst value and a
  positive constraint (so constrained samplers learn the feasible region); never trained.
* ``duplicate``: the same canonical architecture id as an earlier trial; told that trial's
  outcome; never trained again.
* ``evaluating`` -> ``complete`` | ``pruned`` (stopped by ASHA, or by the time budget; state
  PRUNED, not COMPLETE) | ``failed`` (non-finite loss, or the trainable failed more than
  ``max_failures`` times; state FAIL with the reason).

``--trials N`` counts evaluated architectures (complete + pruned + failed).
"""
from __future__ import annotations

import logging
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from . import cost as costmod
from .runstore import (COMPLETE, DUPLICATE, EVALUATED, FAILED, LOST, OVER_BUDGET, PRUNED,
                       RUNNING, STUDY_NAME, RunDir, pareto_front)
from .space import SearchSpace, to_cifar
from .spec import NetworkSpec, load

log = logging.getLogger("igcv_nas.search")

SAMPLERS = ("tpe", "nsga2", "random")
OBJECTIVES = ("accuracy", "pareto")
PROXY_MODES = ("training", "zero-cost", "both")
# the names of igcv_nas.zero_cost.PROXIES (kept here so that argument errors need no torch import)
ZERO_COST_METRICS = ("synflow", "naswot", "grad_norm")
NAMED_TARGETS = {"imagenet": (224, 1000), "cifar10": (32, 10), "cifar100": (32, 100)}
EVALUATING, WAITING = "evaluating", "waiting"
# ASHA needs a rung that says something: after 1 of 2 CPU-budget epochs every architecture is
# still near chance (0.08-0.11 for all 11 trials it pruned in a default CPU search), so early
# stopping starts at 3 epochs (the GPU default has 8)
ASHA_MIN_EPOCHS = 3
MAX_DRAWS = 2000  # samples tried per suggestion before the space counts as exhausted
# settings a resume may change; any other change is refused unless forced
RESUME_MUTABLE = ("trials", "time_budget_s", "cpus_per_trial", "gpus_per_trial",
                  "max_concurrent", "address", "data_dir", "max_failures")


class SearchError(ValueError):
    """Settings or a state that a search cannot start from (one line, what is accepted)."""


# ---------------------------------------------------------------------------------------------
# settings

@dataclass(frozen=True)
class Settings:
    """Everything that defines a search (stored in ``run.json``; resume reads it back)."""
    space: str = "igcv3"
    target: str = "space"            # space | imagenet | cifar10 | cifar100 | RES:CLASSES
    macs: int | None = None
    params: int | None = None
    latency_ms: float | None = None
    latency_device: str = "cpu"
    lut: str | None = None
    dataset: str = "cifar10"
    data_dir: str | None = None
    trials: int = 20
    time_budget_s: float | None = None
    objective: str = "accuracy"
    proxy: str = "training"
    zero_cost_metric: str = "synflow"  # the score when proxy == zero-cost
    sampler: str = "tpe"
    seed: int = 0
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    address: str | None = None
    budget: dict | None = None         # ProxyBudget.to_dict(); None: the device default
    asha: bool = True
    max_failures: int = 2

    def __post_init__(self) -> None:
        def bad(name: str, value: Any, accepted: str) -> SearchError:
            return SearchError(f"{name} {value!r}; accepted: {accepted}")
        if self.objective not in OBJECTIVES:
            raise bad("--objective", self.objective, ", ".join(OBJECTIVES))
        if self.sampler not in SAMPLERS:
            raise bad("--sampler", self.sampler, ", ".join(SAMPLERS))
        if self.proxy not in PROXY_MODES:
            raise bad("--proxy", self.proxy, ", ".join(PROXY_MODES))
        if self.zero_cost_metric not in ZERO_COST_METRICS:
            raise bad("--zero-cost-metric", self.zero_cost_metric, ", ".join(ZERO_COST_METRICS))
        if self.trials < 1:
            raise bad("--trials", self.trials, "an integer >= 1")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise bad("--time-budget", self.time_budget_s, "a positive duration such as 30m or 2h")
        if not self.cpus_per_trial > 0:
            raise bad("--cpus-per-trial", self.cpus_per_trial, "a number > 0")
        if self.gpus_per_trial < 0:
            raise bad("--gpus-per-trial", self.gpus_per_trial, "a number >= 0")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise bad("--max-concurrent", self.max_concurrent, "an integer >= 1")
        if self.max_failures < 0:
            raise bad("--max-failures", self.max_failures, "an integer >= 0")
        parse_target(self.target)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Settings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def score(self) -> str:
        """The result key the search maximises."""
        return f"zc_{self.zero_cost_metric}" if self.proxy == "zero-cost" else "val_acc"

    def proxy_budget(self):
        """The :class:`igcv_nas.proxy.ProxyBudget` of this search."""
        from .proxy import ProxyBudget, default_budget
        if self.budget is not None:
            b = ProxyBudget.from_dict(self.budget)
            return replace(b, mode=self.proxy)
        return default_budget("cuda" if self.gpus_per_trial > 0 else "cpu", self.proxy)


def parse_target(text: str) -> tuple[int, int] | None:
    """``(input size, classes)`` of a ``--target`` (None: the space's own target)."""
    if text == "space":
        return None
    if text in NAMED_TARGETS:
        return NAMED_TARGETS[text]
    parts = str(text).split(":")
    if len(parts) == 2 and all(p.isdigit() and int(p) > 0 for p in parts):
        return int(parts[0]), int(parts[1])
    raise SearchError(f"--target {text!r}; accepted: space, {', '.join(NAMED_TARGETS)} "
                      f"or RESOLUTION:CLASSES such as 160:1000")


def at_target(spec: NetworkSpec, target: str) -> NetworkSpec:
    """``spec`` (as the space samples it) at the resolution and classes budgets are counted at:
    32x32 targets use the CIFAR form (:func:`igcv_nas.space.to_cifar`)."""
    t = parse_target(target)
    if t is None or t == (spec.input_size, spec.num_classes):
        return spec
    if t[0] == 32:
        return to_cifar(spec, t[1], 32)
    return replace(spec, input_size=t[0], num_classes=t[1])


def min_macs_at_target(space: SearchSpace, target: str) -> int:
    t = parse_target(target)
    if t is None:
        return space.min_macs()
    if t[0] == 32:
        return space.macs_range(cifar=True, num_classes=t[1])[0][0]
    return costmod.count(at_target(space.sample(optuna.trial.FixedTrial(
        space.extreme_params("min"))), target)).macs


# ---------------------------------------------------------------------------------------------
# candidates

@dataclass
class Candidate:
    spec: NetworkSpec        # at the target (what budgets count)
    proxy_spec: NetworkSpec  # the data set's variant (what the proxy trains)
    macs: int
    params: int
    latency_ms: float | None = None

    @property
    def arch_id(self) -> str:
        return self.spec.arch_id


def make_candidate(space: SearchSpace, trial: Any, settings: Settings, num_classes: int,
                   resolution: int = 32, lut: Any = None) -> Candidate:
    base = space.sample(trial)
    spec = at_target(base, settings.target)
    c = costmod.count(spec)
    cand = Candidate(spec, to_cifar(base, num_classes, resolution), c.macs, c.params)
    if lut is not None and settings.latency_ms is not None:
        from .latency import predict
        cand.latency_ms = predict(spec, lut, measure_missing=True)
    return cand


def constraints(settings: Settings, cand: Candidate) -> list[float]:
    """Optuna constraint values (<= 0 feasible): relative excess over each budget given."""
    out = []
    if settings.macs is not None:
        out.append(cand.macs / settings.macs - 1.0)
    if settings.params is not None:
        out.append(cand.params / settings.params - 1.0)
    if settings.latency_ms is not None and cand.latency_ms is not None:
        out.append(cand.latency_ms / settings.latency_ms - 1.0)
    return out or [0.0]


def _constraints_func(trial: optuna.trial.FrozenTrial) -> list[float]:
    return trial.user_attrs.get("constraints", [0.0])


# Optuna >= 5 takes constraints per trial (Trial.set_constraint); older ones a constraints_func
SET_CONSTRAINT = hasattr(optuna.Trial, "set_constraint")
_CONSTRAINTS = None if SET_CONSTRAINT else _constraints_func


def set_constraints(trial: optuna.Trial, settings: Settings, values: list[float]) -> None:
    trial.set_user_attr("constraints", values)
    if SET_CONSTRAINT:
        names = [n for n, v in (("macs", settings.macs), ("params", settings.params),
                                ("latency", settings.latency_ms)) if v is not None] or ["none"]
        for n, v in zip(names, values):
            trial.set_constraint(n, v)


def make_sampler(name: str, seed: int, trials: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, constant_liar=True,
                                              n_startup_trials=max(4, min(10, trials // 3)),
                                              constraints_func=_CONSTRAINTS)
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=_CONSTRAINTS,
                                                 population_size=max(4, min(50, trials // 4)))
        return optuna.samplers.RandomSampler(seed=seed)


# ---------------------------------------------------------------------------------------------
# summary for progress displays

@dataclass
class Summary:
    target: int
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    over_budget: int = 0
    duplicates: int = 0
    best: dict | None = None
    elapsed_s: float = 0.0
    eta_s: float | None = None
    attempt: int = 1
    score: str = "val_acc"
    message: str = ""

    @property
    def done(self) -> int:
        return self.complete + self.pruned + self.failed


# ---------------------------------------------------------------------------------------------
# the Ray trainable (runs in a Ray worker; uses the proxy, knows nothing of Optuna)

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
    import ray
    import torch
    from ray import tune

    from .proxy import ProxyBudget, evaluate
    from .train import plan

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
            tune.report({"val_acc": rep.val_acc, "epoch": rep.epoch, "train_loss": rep.train_loss,
                         **base})

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


# ---------------------------------------------------------------------------------------------
# the searcher: Ray Tune's OptunaSearch with budgets, dedupe, PRUNED trials and resume

def _optuna_search_base():
    from ray.tune.search.optuna import OptunaSearch
    return OptunaSearch


class Context:
    """What the searcher needs from the driver (plain data, no Ray)."""

    def __init__(self, run: RunDir, settings: Settings, space: SearchSpace, num_classes: int,
                 attempt: int, lut: Any = None,
                 on_change: Callable[[Summary], None] | None = None):
        self.run, self.settings, self.space = run, settings, space
        self.num_classes, self.attempt, self.lut = num_classes, attempt, lut
        self.on_change = on_change
        self.budget = settings.proxy_budget()
        self.started = time.time()
        self.elapsed_before = float(run.meta.get("elapsed_s", 0.0))
        self.asha_stopped: set[str] = set()
        self.stopping_reason: str | None = None

    def __getstate__(self) -> dict:  # Ray pickles its Tuner state (callbacks, scheduler)
        return {"run_dir": str(self.run.path)}


def make_searcher(ctx: Context, storage: optuna.storages.BaseStorage):
    base = _optuna_search_base()

    class IGCSearch(base):
        """OptunaSearch whose suggestions are in budget and new, whose early-stopped trials are
        PRUNED (not COMPLETE with a low-fidelity score), and which resumes from the journal."""

        def __init__(self) -> None:
            s = ctx.settings
            multi = s.objective == "pareto"
            seed = s.seed + 7919 * (ctx.attempt - 1)  # a resumed search draws afresh
            super().__init__(space=lambda trial: None,
                             metric=[s.score, "macs"] if multi else s.score,
                             mode=["max", "min"] if multi else "max",
                             sampler=make_sampler(s.sampler, seed, s.trials),
                             storage=storage, study_name=STUDY_NAME)
            self.study: optuna.Study = self._ot_study
            self.score_key, self.run_dir = s.score, ctx.run
            self.study.set_user_attr("settings", s.to_dict())
            self.live: dict[str, int] = {}           # Ray trial id -> study trial number
            self.cands: dict[int, dict] = {}         # number -> candidate attributes
            self.waiting: dict[str, list[int]] = {}  # arch id -> duplicate trials waiting on it
            self.reissue: list[int] = []
            self.last: dict[str, dict] = {}          # Ray trial id -> its last result
            self.exhausted: str | None = None
            self._recover()
            self._done_at_start = self.evaluated_count()  # for the ETA of this attempt

        # -- study helpers --------------------------------------------------------------------
        def _trial(self, number: int) -> optuna.Trial:
            fz = self.study._storage.get_trial(
                self.study._storage.get_trial_id_from_study_id_trial_number(
                    self.study._study_id, number))
            return optuna.Trial(self.study, fz._trial_id)

        def _values(self, value: float, macs: int) -> float | list[float]:
            return [value, float(macs)] if ctx.settings.objective == "pareto" else value

        def _frozen(self) -> list[optuna.trial.FrozenTrial]:
            return self.study.get_trials(deepcopy=False)

        def _by_arch(self) -> dict[str, optuna.trial.FrozenTrial]:
            """arch id -> the trial that evaluated (or is evaluating) it."""
            out = {}
            for t in self._frozen():
                st = t.user_attrs.get("status")
                if st in EVALUATED + (EVALUATING,) and "arch_id" in t.user_attrs:
                    out.setdefault(t.user_attrs["arch_id"], t)
            return out

        def _recover(self) -> None:
            """Resume: re-issue trials that were evaluating when the last driver stopped (their
            checkpoints continue), settle duplicates and half-asked trials."""
            evaluating = {}
            for t in self._frozen():
                if t.state != TrialState.RUNNING:
                    continue
                st = t.user_attrs.get("status")
                if st == EVALUATING and ctx.run.spec_file(t.number).is_file():
                    evaluating[t.user_attrs["arch_id"]] = t.number
                    self.reissue.append(t.number)
                    self.cands[t.number] = dict(t.user_attrs)
                elif st != WAITING:
                    self.study._storage.set_trial_user_attr(t._trial_id, "status", LOST)
                    self.study._storage.set_trial_user_attr(
                        t._trial_id, "reason", "the driver stopped before this sample was decided")
                    self.study.tell(t.number, state=TrialState.FAIL)
            done = self._by_arch()
            for t in self._frozen():
                if t.state == TrialState.RUNNING and t.user_attrs.get("status") == WAITING:
                    a = t.user_attrs["arch_id"]
                    if a in evaluating:
                        self.waiting.setdefault(a, []).append(t.number)
                    else:
                        self._settle_duplicate(t.number, done.get(a))

        def _settle_duplicate(self, number: int, orig: optuna.trial.FrozenTrial | None) -> None:
            tr = self._trial(number)
            tr.set_user_attr("status", DUPLICATE)
            if orig is None or orig.state == TrialState.FAIL or orig.values is None:
                tr.set_user_attr("reason", "duplicate of a failed or lost trial")
                if orig is not None:
                    tr.set_user_attr("duplicate_of", orig.number)
                self.study.tell(number, state=TrialState.FAIL)
                return
            tr.set_user_attr("duplicate_of", orig.number)
            for k in ("scores",):
                if k in orig.user_attrs:
                    tr.set_user_attr(k, orig.user_attrs[k])
            if orig.state == TrialState.PRUNED:
                self.study.tell(number, state=TrialState.PRUNED)
            else:
                self.study.tell(number, orig.values if len(orig.values) > 1 else orig.values[0])

        def evaluated_count(self) -> int:
            return sum(1 for t in self._frozen() if t.user_attrs.get("status") in EVALUATED)

        # -- Ray's Searcher interface ---------------------------------------------------------
        def suggest(self, trial_id: str) -> dict | None:
            if self.reissue:
                number = self.reissue.pop(0)
                self.live[trial_id] = number
                return self._config(number, self.cands[number])
            if self.exhausted:
                return self.FINISHED
            s = ctx.settings
            by_arch = self._by_arch()
            for _ in range(MAX_DRAWS):
                tr = self.study.ask()
                cand = make_candidate(ctx.space, tr, s, ctx.num_classes, lut=ctx.lut)
                attrs = {"arch_id": cand.arch_id, "macs": cand.macs, "params": cand.params,
                         "attempt": ctx.attempt}
                if cand.latency_ms is not None:
                    attrs["latency_ms"] = round(cand.latency_ms, 4)
                for k, v in attrs.items():
                    tr.set_user_attr(k, v)
                cons = constraints(s, cand)
                set_constraints(tr, s, cons)
                if max(cons) > 0:
                    tr.set_user_attr("status", OVER_BUDGET)
                    self.study.tell(tr, self._values(0.0, cand.macs))
                    continue
                orig = by_arch.get(cand.arch_id)
                if orig is not None:
                    if orig.state == TrialState.RUNNING:
                        tr.set_user_attr("status", WAITING)
                        tr.set_user_attr("duplicate_of", orig.number)
                        self.waiting.setdefault(cand.arch_id, []).append(tr.number)
                    else:
                        self._settle_duplicate(tr.number, orig)
                    continue
                d = ctx.run.trial_dir(tr.number)
                d.mkdir(parents=True, exist_ok=True)
                from .fileio import write_text
                write_text(ctx.run.spec_file(tr.number), cand.spec.to_json() + "\n")
                write_text(d / "proxy_spec.json", cand.proxy_spec.to_json() + "\n")
                tr.set_user_attr("status", EVALUATING)
                attrs["status"] = EVALUATING
                self.cands[tr.number] = attrs
                self.live[trial_id] = tr.number
                return self._config(tr.number, attrs)
            self.exhausted = (f"no new architecture within the budgets in {MAX_DRAWS} draws "
                              f"(the space may be exhausted at this budget)")
            return self.FINISHED

        def _config(self, number: int, attrs: dict) -> dict:
            d = ctx.run.trial_dir(number)
            return {"number": number, "arch_id": attrs["arch_id"], "macs": attrs["macs"],
                    "proxy_spec_file": str(d / "proxy_spec.json"),
                    "checkpoint": str(ctx.run.checkpoint_file(number)),
                    "budget": ctx.budget.to_dict(), "threads": ctx.settings.cpus_per_trial,
                    "score": ctx.settings.score}

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            self.last[trial_id] = result
            number = self.live.get(trial_id)
            if (number is None or ctx.settings.objective == "pareto" or "val_acc" not in result
                    or result.get("failed")):
                return
            if ctx.settings.score == "val_acc" and not result.get("final"):
                try:
                    self._trial(number).report(float(result["val_acc"]), int(result["epoch"]))
                except (ValueError, RuntimeError):
                    pass  # a step reported before the driver restarted

        def on_trial_complete(self, trial_id: str, result: dict | None = None,
                              error: bool = False) -> None:
            number = self.live.pop(trial_id, None)
            if number is None:
                return
            attrs = self.cands.pop(number)
            tr = self._trial(number)
            result = result or {}
            for k in ("node", "wall_seconds"):
                if k in result:
                    tr.set_user_attr(k, result[k])
            if result.get("resumed"):
                tr.set_user_attr("resumed_in", ctx.attempt)
            if error or result.get("failed"):
                reason = result.get("failed") or (
                    f"the trial failed {ctx.settings.max_failures + 1} time(s) (its worker died "
                    f"or raised; see ray/attempt-{ctx.attempt}/trial-{number}/error.txt)")
                tr.set_user_attr("status", FAILED)
                tr.set_user_attr("reason", str(reason))
                self.study.tell(number, state=TrialState.FAIL)
            elif result.get("final"):
                scores = {k: float(v) for k, v in result.items()
                          if k in ("val_acc", "best_val_acc", "epochs", "train_seconds",
                                   "images_per_s") or k.startswith("zc_")}
                tr.set_user_attr("scores", scores)
                tr.set_user_attr("status", COMPLETE)
                self.study.tell(number, self._values(scores[ctx.settings.score], attrs["macs"]))
            else:
                stopped_by = ("asha" if trial_id in ctx.asha_stopped
                              else ctx.stopping_reason or "stopped")
                if stopped_by not in ("asha", "time-budget"):
                    # interrupted (Ctrl-C, driver shutting down): left to resume from checkpoint
                    return
                tr.set_user_attr("status", PRUNED)
                tr.set_user_attr("reason", stopped_by)
                if "val_acc" in result and ctx.settings.objective != "pareto":
                    step = int(result["epoch"])
                    # the report that made the scheduler stop it never reached on_trial_result
                    if step not in self.study.get_trials(deepcopy=False)[number].intermediate_values:
                        tr.report(float(result["val_acc"]), step)
                if "val_acc" in result:
                    tr.set_user_attr("scores", {"val_acc": float(result["val_acc"]),
                                                "epochs": float(result.get("epoch", 0))})
                self.study.tell(number, state=TrialState.PRUNED)
            ckpt = ctx.run.checkpoint_file(number)
            if ckpt.exists():
                ckpt.unlink()
            orig = self.study.get_trials(deepcopy=False)[number]
            for dup in self.waiting.pop(attrs["arch_id"], []):
                self._settle_duplicate(dup, orig)
            self.publish()

        def stop_live(self) -> None:
            """After Ray returned because the time budget is spent: the trials still running
            are PRUNED (reason time-budget) with their last report."""
            for trial_id in list(self.live):
                self.on_trial_complete(trial_id, self.last.get(trial_id, {}))

        def __getstate__(self) -> dict:
            # Ray pickles its Tuner state; the study journal is this searcher's state
            return {"journal": str(ctx.run.journal)}

        def __setstate__(self, state: dict) -> None:
            self.__dict__.update(state)

        def save(self, checkpoint_path: str) -> None:
            # the study journal is the state; Ray's searcher checkpoint records only that
            with open(checkpoint_path, "w", encoding="utf-8") as f:
                f.write(f"state: {ctx.run.journal}\n")

        def restore(self, checkpoint_path: str) -> None:
            raise RuntimeError("resume a search with igcv-search --resume, not Tuner.restore")

        # -- results ------------------------------------------------------------------------------
        def rows(self) -> list[dict]:
            return study_rows(self.study, ctx.run.measured_latency())

        def summary(self, rows: list[dict] | None = None) -> Summary:
            rows = self.rows() if rows is None else rows
            sm = Summary(target=ctx.settings.trials, attempt=ctx.attempt, score=ctx.settings.score)
            for r in rows:
                st = r["status"]
                if st == COMPLETE:
                    sm.complete += 1
                elif st == PRUNED:
                    sm.pruned += 1
                elif st == FAILED:
                    sm.failed += 1
                elif st == OVER_BUDGET:
                    sm.over_budget += 1
                elif st == DUPLICATE:
                    sm.duplicates += 1
            sm.running = len(self.live)
            sm.best = best_row(rows, ctx.settings.score)
            sm.elapsed_s = ctx.elapsed_before + time.time() - ctx.started
            done_here = sm.done - self._done_at_start
            if done_here > 0:
                left = max(0, ctx.settings.trials - sm.done)
                sm.eta_s = (time.time() - ctx.started) / done_here * left
            sm.message = self.exhausted or ""
            return sm

        def publish(self) -> Summary:
            rows = self.rows()
            best = best_row(rows, ctx.settings.score)
            if best is not None:
                best = {**best, "spec": json_file(ctx.run.spec_file(best["number"]))}
            ctx.run.write_results(rows, best, pareto_front(
                [r for r in rows if r["status"] == COMPLETE], ctx.settings.score))
            sm = self.summary(rows)
            ctx.run.update_meta(elapsed_s=round(sm.elapsed_s, 3))
            if ctx.on_change:
                ctx.on_change(sm)
            return sm

    return IGCSearch()


def confirm_latency(searcher, lut: Any, top: int = 3) -> None:
    """Measure (not predict) the latency of the final candidates -- the ``top`` best and the
    Pareto front -- on the LUT's device and settings, once no trial is training; recorded as
    ``measured_latency_ms``."""
    from .latency import measure
    rows = searcher.rows()
    score = searcher.score_key
    done = sorted((r for r in rows if r["status"] == COMPLETE), key=lambda r: -r[score])
    chosen = {r["number"] for r in done[:top]}
    chosen |= {r["number"] for r in pareto_front(done, score)}
    run = searcher.run_dir
    measured = run.measured_latency()
    for n in sorted(chosen - set(measured)):
        m = measure(load(run.spec_file(n)), lut.device, lut.threads, lut.batch, lut.channels_last,
                    lut.warmup, lut.reps)
        measured[n] = round(m.value(lut.statistic), 4)
    run.write_measured_latency(measured)


def json_file(path: Path) -> Any:
    import json
    return json.loads(Path(path).read_text(encoding="utf-8"))


def study_rows(study: optuna.Study, measured: dict[int, float] | None = None) -> list[dict]:
    """One dict per study trial: the trials-table row (see :data:`runstore.TABLE_COLUMNS`);
    ``measured``: trial number -> measured latency (ms) of the final candidates."""
    measured = measured or {}
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        status = a.get("status", RUNNING)
        if t.state == TrialState.RUNNING and status in (EVALUATING, WAITING):
            status = RUNNING
        row = {"number": t.number, "status": status, "arch_id": a.get("arch_id"),
               "macs": a.get("macs"), "params": a.get("params"),
               "latency_ms": a.get("latency_ms"), "measured_latency_ms": measured.get(t.number),
               "wall_seconds": a.get("wall_seconds"), "node": a.get("node"),
               "attempt": a.get("attempt"), "resumed_in": a.get("resumed_in"),
               "duplicate_of": a.get("duplicate_of"),
               "reason": a.get("reason"),
               "started": t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None,
               "finished": (t.datetime_complete.isoformat(timespec="seconds")
                            if t.datetime_complete else None)}
        row.update(a.get("scores", {}))
        rows.append(row)
    return rows


def best_row(rows: list[dict], score: str) -> dict | None:
    done = [r for r in rows if r["status"] == COMPLETE and r.get(score) is not None]
    return max(done, key=lambda r: (r[score], -r["macs"]), default=None)


# ---------------------------------------------------------------------------------------------
# Ray side of the driver

def connect(address: str | None, quiet: bool = True) -> dict:
    """Start a local Ray instance (all CPUs and GPUs of this machine) or join ``address``;
    returns the cluster's resources."""
    import ray
    if not ray.is_initialized():
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        kw: dict[str, Any] = dict(include_dashboard=False, log_to_driver=not quiet,
                                  logging_level=logging.ERROR, configure_logging=True)
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(**kw)
    return ray.cluster_resources()


def _scheduler(ctx: Context, epochs: int):
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class RecordingASHA(ASHAScheduler):
        def on_trial_result(self, tune_controller, trial, result):
            action = super().on_trial_result(tune_controller, trial, result)
            if action == TrialScheduler.STOP and not result.get("final"):
                ctx.asha_stopped.add(trial.trial_id)
            return action

    return RecordingASHA(time_attr="epoch", metric="val_acc", mode="max", max_t=epochs,
                         grace_period=1, reduction_factor=2)


def _callback(searcher, ctx: Context):
    from ray.tune import Callback

    class Progress(Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            if ctx.on_change:
                ctx.on_change(searcher.summary())

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if ctx.on_change:
                ctx.on_change(searcher.summary())

        def on_step_end(self, iteration, trials, **info):
            ts = ctx.settings.time_budget_s
            if ts and ctx.elapsed_before + time.time() - ctx.started >= ts:
                ctx.stopping_reason = "time-budget"

    return Progress()


@dataclass
class Outcome:
    summary: Summary
    rows: list[dict]
    best: dict | None
    pareto: list[dict]
    interrupted: bool = False


def run_search(run: RunDir, settings: Settings, space: SearchSpace, splits: Any,
               on_change: Callable[[Summary], None] | None = None, lut: Any = None,
               quiet: bool = True) -> Outcome:
    """Run (or continue) the search recorded in ``run`` until ``settings.trials`` architectures
    are evaluated, the time budget is spent, or the space is exhausted."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from .train import plan

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    resources = connect(settings.address, quiet)
    meta = run.meta
    attempt = len(meta.get("attempts", [])) + 1
    run.update_meta(status="running", attempts=meta.get("attempts", []) + [
        {"attempt": attempt, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
         "trials": settings.trials, "pid": os.getpid()}])
    from .fileio import remove_stale_temps
    stale = remove_stale_temps(run.path)  # left by writes a crash interrupted (we hold the lock)
    if stale:
        log.warning("removed %d temporary files of interrupted writes", stale)
    torn = run.repair_journal()
    if torn:
        log.warning("study journal: removed a torn last record (%d bytes)", torn)
    storage = JournalStorage(JournalFileBackend(str(run.journal)))
    ctx = Context(run, settings, space, splits.num_classes, attempt, lut, on_change)
    searcher = make_searcher(ctx, storage)
    remaining = settings.trials - searcher.evaluated_count()
    _, _, epochs = plan(len(splits.train), ctx.budget.train)
    time_left = None
    if settings.time_budget_s is not None:
        time_left = settings.time_budget_s - ctx.elapsed_before
    interrupted = False
    if remaining > 0 and (time_left is None or time_left > 0):
        per_trial = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
        slots = int(resources.get("CPU", 1) // settings.cpus_per_trial)
        if settings.gpus_per_trial > 0:
            slots = min(slots, int(resources.get("GPU", 0) // settings.gpus_per_trial))
        if slots < 1:
            raise SearchError(f"the Ray cluster has {resources.get('CPU', 0):g} CPUs and "
                              f"{resources.get('GPU', 0):g} GPUs; a trial asks for "
                              f"{settings.cpus_per_trial:g} CPUs and {settings.gpus_per_trial:g} GPUs")
        concurrent = min(settings.max_concurrent or slots, remaining)
        fn = tune.with_resources(tune.with_parameters(trainable, splits=splits), per_trial)
        use_asha = settings.asha and settings.proxy != "zero-cost" and epochs >= ASHA_MIN_EPOCHS
        tuner = tune.Tuner(
            fn,
            tune_config=tune.TuneConfig(
                search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrent),
                scheduler=_scheduler(ctx, epochs) if use_asha else None,
                num_samples=remaining, time_budget_s=time_left, reuse_actors=True,
                trial_name_creator=lambda t: f"trial-{t.config.get('number', t.trial_id)}",
                trial_dirname_creator=lambda t: f"trial-{t.config.get('number', t.trial_id)}"),
            run_config=tune.RunConfig(
                name=f"attempt-{attempt}", storage_path=str(run.ray_dir()), verbose=0,
                failure_config=tune.FailureConfig(max_failures=settings.max_failures),
                callbacks=[_callback(searcher, ctx)]))
        searcher.publish()
        try:
            tuner.fit()
        except KeyboardInterrupt:
            interrupted = True
        if (settings.time_budget_s is not None and not interrupted
                and ctx.elapsed_before + time.time() - ctx.started >= settings.time_budget_s - 1):
            ctx.stopping_reason = "time-budget"
            searcher.stop_live()
        interrupted = interrupted or (searcher.live and ctx.stopping_reason is None)
    if lut is not None and not interrupted:
        confirm_latency(searcher, lut)
    sm = searcher.publish()
    rows = searcher.rows()
    meta = run.meta
    atts = meta.get("attempts", [])
    if atts:
        atts[-1]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    status = "interrupted" if interrupted else ("finished" if sm.done >= settings.trials
                                                else "stopped")
    run.update_meta(status=status, attempts=atts)
    best = best_row(rows, settings.score)
    return Outcome(sm, rows, best, pareto_front([r for r in rows if r["status"] == COMPLETE],
                                                settings.score), bool(interrupted))
