"""The search driver: Optuna proposes, Ray Tune evaluates, the run directory records.

Data flow: the space samples a spec (define-by-run) -> its analytic cost (and predicted latency) is
checked against the budgets and the MACs band *before* anything trains -> an in-budget architecture
not seen before is handed to Ray Tune, whose trainable calls
:func:`igcv_nas.evaluate.proxy.evaluate` on the data set's variant of the spec -> the result is told
to the Optuna study (journal file in the run directory) -> the trials table, best and Pareto files
are rewritten from the study.

The bookkeeping (what each sample became, what a sampler is told, the multi-fidelity ladder,
recovery on resume) is :mod:`igcv_nas.search.trials`, Ray-free; :mod:`igcv_nas.search.raytune`
adapts it to Ray Tune. This module does not know how blocks are built (the space and the proxy do)
and the trainer does not know about Optuna or Ray.

``--trials N`` counts evaluated architectures at the first rung (complete + pruned + failed);
with the ladder (the default for ``--proxy training`` and ``--objective accuracy``) the best
of them are then trained longer and the finalists re-trained with fresh seeds
(:func:`igcv_nas.search.trials.ladder_plan`).
"""
from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from ..arch import cost as costmod
from ..arch.space import SearchSpace
from ..arch.spec import NetworkSpec
from .trials import Objective, TrialStatus
from .settings import ASK_SECONDS, MAX_DRAWS, RUNG0_TIME_SHARE, Settings, at_target, rung_budget

log = logging.getLogger("igcv_nas.search.engine")

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
    cand = Candidate(spec, base.with_target(resolution, num_classes, cifar=True), c.macs, c.params)
    if lut is not None and settings.latency_ms is not None:
        from ..evaluate.latency import predict
        method = settings.latency_predictor  # learned: prices unmeasured pieces, measures nothing
        cand.latency_ms = predict(spec, lut, measure_missing=method == "lut", method=method)
    return cand


def judge(settings: Settings, attrs: dict) -> tuple[TrialStatus, str] | None:
    """Why a sampled architecture is not trained (over a budget, below the MACs band), or None."""
    for key, limit, name in (("macs", settings.macs, "MACs"), ("params", settings.params, "params"),
                             ("latency_ms", settings.latency_ms, "latency ms")):
        v = attrs.get(key)
        if limit is not None and v is not None and v > limit:
            fmt = (lambda x: f"{x:,}") if key != "latency_ms" else (lambda x: f"{x:.3f}")
            return TrialStatus.OVER_BUDGET, f"{name} {fmt(v)} over the budget {fmt(limit)}"
    floor = settings.band_floor
    if floor is not None and attrs["macs"] < floor:
        return TrialStatus.BELOW_BAND, f"MACs {attrs['macs']:,} below the band floor {floor:,}"
    return None


def sampler_seed(seed: int, sampler: str) -> int:
    """The seed a sampler named ``sampler`` gets for the search seed ``seed`` (32 bits)."""
    import hashlib
    return int(hashlib.sha256(f"igcv-nas:{sampler}:{seed}".encode()).hexdigest()[:8], 16)


def make_sampler(settings: Settings, seed: int,
                 accept: Callable[[Any], bool] | None = None) -> optuna.samplers.BaseSampler:
    """The sampler of ``settings.sampler``. Only evaluated architectures reach a sampler as
    results (:mod:`igcv_nas.search.trials`), so start-up phases count evaluated architectures.

    * tpe: multivariate TPE with ``group=True`` (the space is conditional: a block asks only
      the keys of its kind, a stage only its depth's blocks), constant liar for concurrent
      trials, start-up of trials // 3 (4 to 10) random architectures.
    * evolution: regularized evolution (:class:`igcv_nas.search.evolution.EvolutionSampler`),
      population trials // 3 (4 to 20), tournament half of it; ``accept`` keeps every child
      inside the budgets and the band and new.
    * nsga2: NSGA-II (:class:`igcv_nas.search.nsga.ConditionalNSGAII`), population trials // 3 (6 to
      50), uniform crossover of every parameter the parents have (conditional ones included),
      ``accept`` as for evolution.
    * random: uniform.

    Each sampler draws from its own stream, :func:`sampler_seed` of the search seed and its
    name: TPE's random start-up is not random search's first draws with the same seed.

    Args:
        settings: the search's settings (``sampler`` and ``trials`` are used).
        seed: the search seed the sampler's own seed is derived from.
        accept: for evolution and NSGA-II: whether a child (a trial-like object) may be
            proposed; None: every child.

    Returns:
        A new Optuna sampler; any ``sampler`` other than tpe, evolution or nsga2 (which
        :class:`~igcv_nas.search.settings.Settings` refuses) gives the random one. Raises
        nothing of its own."""
    n = settings.trials
    seed = sampler_seed(seed, settings.sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if settings.sampler == "tpe":
            return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True,
                                              group=True, n_startup_trials=max(4, min(10, n // 3)))
        if settings.sampler == "evolution":
            from .evolution import EvolutionSampler
            pop = max(4, min(20, n // 3))
            return EvolutionSampler(population_size=pop, sample_size=max(2, pop // 2), seed=seed,
                                    accept=accept)
        if settings.sampler == "nsga2":
            from .nsga import ConditionalNSGAII
            return ConditionalNSGAII(seed=seed, population_size=max(6, min(50, n // 3)),
                                     accept=accept)
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
    below_band: int = 0
    duplicates: int = 0
    best: dict | None = None
    elapsed_s: float = 0.0
    eta_s: float | None = None
    attempt: int = 1
    score: str = "val_acc"
    message: str = ""
    ladder_done: int = 0      # ladder trainings finished (promotions and confirmations)
    ladder_planned: int = 0   # ladder trainings planned (0: no ladder)
    phase: str = "sampling"   # sampling | promote | confirm | done

    @property
    def done(self) -> int:
        return self.complete + self.pruned + self.failed


FINISHED = "FINISHED"  # what Engine.next_config returns when nothing is left to start


class Engine:
    """The search's state and decisions, without Ray: which training to start next (a new
    architecture, a ladder promotion or confirmation, or a trial to continue after a resume),
    and what each result means for the study and the run directory.

    :mod:`igcv_nas.search.raytune` drives it from Ray Tune; a test can drive it by hand.

    Constructing it creates (or loads) the study in ``storage`` (and the ladder's study when
    the settings use the ladder) and recovers the trials a previous attempt left running.

    Args:
        run (RunDir): the run directory (:class:`~igcv_nas.search.runstore.RunDir`).
        settings: the search's settings.
        space: the search space.
        num_classes: classes of the data set the proxy trains on.
        attempt: 1 for a new search, one more on each resume (the sampler seed moves with it).
        storage: the Optuna storage of the study.
        lut: the latency LUT (or learned predictor) candidates are priced with; None: none.
        on_change: called with the :class:`Summary` whenever it is published.
        epochs: epochs of the first rung's training (for progress and ETA).

    Raises:
        RunError: the run directory's ``run.json`` cannot be read.
        InputError: the recorded proxy budget cannot be used
            (:meth:`~igcv_nas.search.settings.Settings.proxy_budget`).
    """

    def __init__(self, run, settings: Settings, space: SearchSpace, num_classes: int,
                 attempt: int, storage: optuna.storages.BaseStorage, lut: Any = None,
                 on_change: Callable[[Summary], None] | None = None,
                 epochs: int = 1):
        from .trials import LADDER_STUDY, STUDY_NAME, Ladder, TrialBook, ladder_plan
        self.run, self.settings, self.space = run, settings, space
        self.num_classes, self.attempt, self.lut = num_classes, attempt, lut
        self.on_change = on_change
        self.budget = settings.proxy_budget(space.name)
        self.epochs = epochs
        self.objective = settings.objective_fn
        self.started = time.time()
        self.elapsed_before = float(run.meta.get("elapsed_s", 0.0))
        self.asha_stopped: set[str] = set()
        self.stopping_reason: str | None = None
        self.exhausted: str | None = None
        from . import studystore
        self.shared = studystore.is_shared(settings)
        self.driver = str(run.meta.get("driver") or "")
        seed = settings.seed + 7919 * (attempt - 1)  # a resumed search draws afresh
        if self.shared:
            seed = studystore.driver_seed(seed, self.driver)
        accept = self._accept if settings.sampler in ("evolution", "nsga2") else None
        directions = ["maximize", "minimize"] if self.objective.pareto else ["maximize"]
        name = settings.study_name if self.shared else STUDY_NAME
        study = optuna.create_study(storage=storage, sampler=make_sampler(settings, seed, accept),
                                    study_name=name, directions=directions,
                                    load_if_exists=True)
        if not self.shared:
            study.set_user_attr("settings", settings.to_dict())
        elif "fingerprint" not in study.user_attrs:
            study.set_user_attr("fingerprint", studystore.fingerprint(settings, space.sha256))
        self.book = TrialBook(study, self.objective, self.driver, self.shared)
        self.ladder = None
        if settings.uses_ladder:
            lstudy = optuna.create_study(storage=storage, study_name=LADDER_STUDY,
                                         sampler=optuna.samplers.RandomSampler(seed=seed),
                                         direction="maximize", load_if_exists=True)
            self.ladder = Ladder(lstudy, self.book, ladder_plan(settings.trials))
        self.live: dict[str, dict] = {}   # Ray trial id -> the config it runs
        self.last: dict[str, dict] = {}   # Ray trial id -> its last result
        self.nodes: dict[str, list[str]] = {}  # Ray trial id -> every node it ran on, in order
        self.retries: dict[str, int] = {}  # Ray trial id -> restarts after its worker died
        # Ray Tune's storage (local path or URI) and whether trials checkpoint into it
        self.storage: str = str(run.ray_dir())
        self.checkpoints = True
        self.reissue: list[dict] = []
        self._peak_live = 1  # the most trainings seen running at once (for the ETA)
        self._fruitless = 0  # draws since the last new in-budget architecture
        self._recover()

    # -- candidates ---------------------------------------------------------------------------
    def _candidate(self, trial: Any) -> Candidate:
        return make_candidate(self.space, trial, self.settings, self.num_classes, lut=self.lut)

    def _propose(self, trial: optuna.Trial) -> tuple[dict, Candidate]:
        cand = self._candidate(trial)
        attrs = {"arch_id": cand.arch_id, "macs": cand.macs, "params": cand.params,
                 "attempt": self.attempt}
        if cand.latency_ms is not None:
            attrs["latency_ms"] = round(cand.latency_ms, 4)
        if self.shared:  # every driver's run directory can report and export the whole study
            attrs["spec"] = cand.spec.to_dict()
            attrs["proxy_spec"] = cand.proxy_spec.to_dict()
        parent_of = getattr(self.book.study.sampler, "parent_of", None)
        if parent_of is not None:
            parent = parent_of(trial.number)
            if parent is not None:
                attrs["parent"] = parent
        return attrs, cand

    def _accept(self, trial_like: Any) -> bool:
        """For the evolution and NSGA-II samplers: is a child inside the budgets and band, and
        new?"""
        cand = self._candidate(trial_like)
        attrs = {"macs": cand.macs, "params": cand.params, "latency_ms": cand.latency_ms}
        return judge(self.settings, attrs) is None and cand.arch_id not in self.book.by_arch()

    # -- state --------------------------------------------------------------------------------
    def _arch_config(self, number: int, attrs: dict, spec: dict | None = None) -> dict:
        return {"kind": "arch", "number": number, "name": f"trial-{number}",
                "arch_id": attrs["arch_id"], "macs": attrs["macs"],
                "spec": spec or self._proxy_spec(number), "budget": self.budget.to_dict(),
                "threads": self.settings.cpus_per_trial, "score": self.settings.score}

    def _ladder_config(self, job) -> dict:
        rung = self.ladder.plan[job.rung - 1]
        return {"kind": "ladder", "number": job.source, "job": job.number, "rung": job.rung,
                "seed": job.seed, "name": f"trial-{job.source}-r{job.rung}s{job.seed}",
                "arch_id": job.attrs.get("arch_id"), "macs": job.attrs.get("macs"),
                "spec": self._proxy_spec(job.source),
                "budget": rung_budget(self.budget, rung.factor, job.seed).to_dict(),
                "threads": self.settings.cpus_per_trial, "score": self.settings.score}

    def _proxy_spec(self, number: int) -> dict:
        """The trial's proxy spec as it travels in the Ray config (read on the driver: no trial
        opens the run directory)."""
        from ..arch.spec import load
        return load(self.run.proxy_spec_file(number)).to_dict()

    def _continuable(self, number: int) -> bool:
        """Whether an interrupted trial can be continued: both its spec files read as specs of
        the architecture the study recorded. A driver that died between writing them (before
        the training was handed to Ray) or a damaged file leaves a sample that is lost (and
        replaced); the damaged case is logged in one line."""
        from ..arch.spec import load
        from ..errors import IGCVError
        spec, proxy = self.run.spec_file(number), self.run.proxy_spec_file(number)
        if not (spec.is_file() and proxy.is_file()):
            return False
        want = self.book.trials()[number].user_attrs.get("arch_id")
        try:
            got = load(spec).arch_id
            load(proxy)
        except (IGCVError, OSError, ValueError) as e:
            log.warning("trial %d: %s; its sample is replaced by a new one", number,
                        " ".join(str(e).split()))
            return False
        if got != want:
            log.warning("trial %d: %s is of architecture %s, the study recorded %s; its sample "
                        "is replaced by a new one", number, spec, got, want)
            return False
        return True

    def _recover(self) -> None:
        for p in self.book.recover(self._continuable):
            self.reissue.append(self._arch_config(p.number, p.attrs))
        if self.ladder is not None:
            for job in self.ladder.recover(lambda n: self._continuable(
                    self.ladder.trials()[n].user_attrs["source"])):
                self.reissue.append(self._ladder_config(job))

    def evaluated_count(self) -> int:
        return self.book.evaluated_count()

    def _elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.started

    def _live_arch(self) -> int:
        return sum(1 for c in self.live.values() if c["kind"] == "arch")

    def sampling_open(self) -> bool:
        """New architectures are still to be sampled."""
        s = self.settings
        if self.exhausted or self.stopping_reason:
            return False
        # evaluated or evaluating: this driver's live and continued trials, and in a shared
        # study every driver's
        if self.book.committed_count() >= s.trials:
            return False
        if self.ladder is not None and s.time_budget_s is not None:
            return self._elapsed() < RUNG0_TIME_SHARE * s.time_budget_s
        return True

    def remaining(self) -> int:
        """Trainings still to start or finish (an upper bound: Ray Tune's sample count)."""
        n = max(0, self.settings.trials - self.evaluated_count())
        if self.ladder is not None:
            n += max(0, self.ladder.planned() - self.ladder.finished())
        return n

    # -- decisions ----------------------------------------------------------------------------
    def next_config(self, trial_id: str) -> dict | str | None:
        """The config of the training to start as Ray trial ``trial_id``; None: nothing now
        (wait for running trainings); FINISHED: nothing left."""
        if self.reissue:
            cfg = self.reissue.pop(0)
            return self._start(trial_id, cfg)
        if self.stopping_reason:
            return FINISHED
        if self.sampling_open():
            with self._batched():
                prop = self.book.ask(self._propose, lambda a: judge(self.settings, a),
                                     MAX_DRAWS - self._fruitless,
                                     limit=self.settings.trials if self.shared else None,
                                     deadline_s=ASK_SECONDS, on_draws=self._draw_voice)
            if prop is None and self.book.last_stop == "time":
                # Ray Tune gets control back (a Ctrl-C or SIGTERM is acted on) and asks again
                self._fruitless += self.book.last_draws
                return None
            self._fruitless = 0
            if prop is not None:
                from ..fileio import write_text
                cand = prop.payload
                d = self.run.trial_dir(prop.number)
                d.mkdir(parents=True, exist_ok=True)
                write_text(self.run.spec_file(prop.number), cand.spec.to_json() + "\n")
                write_text(self.run.proxy_spec_file(prop.number), cand.proxy_spec.to_json() + "\n")
                cfg = self._arch_config(prop.number, prop.attrs, cand.proxy_spec.to_dict())
                return self._start(trial_id, cfg)
            if self.sampling_open():  # not: other drivers took the study's last places
                self.exhausted = (f"no new architecture within the budgets in {MAX_DRAWS} "
                                  f"draws (the space may be exhausted at this budget)")
        if self.ladder is None:
            return FINISHED
        rung0_done = not self.sampling_open() and self._live_arch() == 0
        jobs = self.ladder.next_jobs(rung0_done)
        if jobs:
            source, rung, seed = jobs[0]
            src = self.book.trials()[source]
            job = self.ladder.start(source, rung, seed, dict(src.user_attrs))
            self.ladder.annotate(job.number, attempt=self.attempt)
            cfg = self._ladder_config(job)
            return self._start(trial_id, cfg)
        if self.live or not rung0_done:
            return None
        return FINISHED

    def _draw_voice(self, draws: int) -> None:
        """A long run of draws without a new architecture within the budgets: the summary's
        skipped counts go out (one progress line per change), with what is going on."""
        if self.on_change is None:
            return
        sm = self.summary()
        sm.message = (f"sampling: {self._fruitless + draws:,} draws without a new architecture "
                      f"within the budgets (gives up at {MAX_DRAWS:,})")
        self.on_change(sm)

    def _target(self, cfg: dict):
        """The study (``book``) or ladder record a training config belongs to, and its number."""
        if cfg["kind"] == "arch":
            return self.book, cfg["number"]
        return self.ladder, cfg["job"]

    def _start(self, trial_id: str, cfg: dict) -> dict:
        target, number = self._target(cfg)
        recorded = target.trials()[number].user_attrs.get("checkpoint")
        cfg = {**cfg, "checkpoints": self.checkpoints,
               "restore": recorded if self.checkpoints and isinstance(recorded, dict) else None}
        self.live[trial_id] = cfg
        self._peak_live = max(self._peak_live, len(self.live))
        return cfg

    def on_checkpoint(self, trial_id: str, path: str) -> None:
        """Ray Tune persisted a checkpoint of ``trial_id`` at ``path`` in the storage: recorded,
        so that a restarted driver continues the training from it."""
        cfg = self.live.get(trial_id)
        if cfg is not None:
            target, number = self._target(cfg)
            target.annotate(number, checkpoint={"storage": self.storage, "path": str(path)})

    def on_retry(self, trial_id: str) -> None:
        """Ray Tune restarts ``trial_id`` after its worker died (from its last checkpoint)."""
        self.retries[trial_id] = self.retries.get(trial_id, 0) + 1

    def _drop_checkpoint(self, cfg: dict) -> None:
        """Delete a finished training's checkpoint from the storage (best effort: it is only
        space)."""
        target, number = self._target(cfg)
        rec = target.trials()[number].user_attrs.get("checkpoint")
        if not isinstance(rec, dict):
            return
        try:
            from .raytune import storage_fs
            fs, _ = storage_fs(rec["storage"])
            fs.delete_dir(rec["path"])
        except Exception as e:  # noqa: BLE001 - a store that is gone keeps its bytes
            log.info("could not delete checkpoint %s: %s", rec.get("path"), e)

    def on_result(self, trial_id: str, result: dict) -> None:
        self.last[trial_id] = result
        node = result.get("node")
        seen = self.nodes.setdefault(trial_id, [])
        if node and (not seen or seen[-1] != node):
            seen.append(node)
        cfg = self.live.get(trial_id)
        if (cfg is None or cfg["kind"] != "arch" or self.objective.pareto or result.get("failed")
                or result.get("final") or "val_acc" not in result
                or self.settings.score != "val_acc"):
            return
        try:
            self.book.report(cfg["number"], float(result["val_acc"]), int(result["epoch"]))
        except (ValueError, RuntimeError):
            pass  # a step reported before the driver restarted

    def _scores(self, result: dict) -> dict:
        return {k: float(v) for k, v in result.items()
                if k in ("val_acc", "val_loss", "tse", "best_val_acc", "epochs", "train_seconds",
                         "images_per_s") or k.startswith("zc_")}

    def _batched(self):
        """The study's records of one decision written as one journal append."""
        from .compat import batched_writes
        return batched_writes(self.book.study)

    def on_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        cfg = self.live.pop(trial_id, None)
        if cfg is None:
            return
        with self._batched():
            decided = self._decide(trial_id, cfg, result, error)
        if decided:
            self._drop_checkpoint(cfg)
            self.publish()

    def _decide(self, trial_id: str, cfg: dict, result: dict | None, error: bool) -> bool:
        """What a finished training means for the study; False when it is left to a resume."""
        result = result or {}
        target, number = self._target(cfg)
        extra = {k: result[k] for k in ("wall_seconds", "notes") if k in result}
        nodes = self.nodes.pop(trial_id, [])
        if nodes:
            extra["node"] = ";".join(nodes)
        extra["retries"] = self.retries.pop(trial_id, 0)  # 0: it ran once, on one worker
        if result.get("resumed"):
            extra["resumed_in"] = self.attempt
        if extra:
            target.annotate(number, **extra)
        if error or result.get("failed"):
            reason = result.get("failed") or (
                f"the trial failed {self.settings.max_failures + 1} time(s) (its worker died "
                f"or raised; see ray/attempt-{self.attempt}/{cfg['name']}/error.txt)")
            target.fail(number, str(reason))
        elif result.get("final"):
            scores = self._scores(result)
            if cfg["kind"] == "arch":
                self.book.complete(number, scores, cfg["macs"])
            else:
                self.ladder.complete(number, scores)
        else:
            stopped_by = ("asha" if trial_id in self.asha_stopped
                          else self.stopping_reason or "stopped")
            if stopped_by not in ("asha", "time-budget"):
                # interrupted (Ctrl-C, driver shutting down): left to resume from its checkpoint
                return False
            if cfg["kind"] == "arch":
                if "val_acc" in result and not self.objective.pareto:
                    self.book.report(number, float(result["val_acc"]), int(result["epoch"]))
                scores = None
                if "val_acc" in result:
                    scores = {"val_acc": float(result["val_acc"]),
                              "epochs": float(result.get("epoch", 0))}
                self.book.prune(number, stopped_by, scores)
            else:
                from .trials import TrialStatus as TS
                self.ladder.fail(number, stopped_by, TS.PRUNED)
        return True

    def stop_live(self) -> None:
        """After Ray returned because the time budget is spent: the trainings still running are
        PRUNED (reason time-budget) with their last report."""
        for trial_id in list(self.live):
            self.on_complete(trial_id, self.last.get(trial_id, {}))

    # -- results ------------------------------------------------------------------------------
    def rows(self) -> list[dict]:
        rows = self.book.rows(self.run.measured_latency())
        if self.ladder is not None:
            rows += self.ladder.rows()
        return rows

    def first_rung(self, rows: list[dict] | None = None) -> list[dict]:
        return [r for r in (self.rows() if rows is None else rows) if r.get("rung", 0) == 0]

    def best(self, rows: list[dict]) -> dict | None:
        """The reported best: with the ladder the confirmed winner (mean and spread over its
        fresh-seed re-trainings); before confirmation, or without the ladder, the best
        first-rung score, marked ``confirmed: false``."""
        first = self.first_rung(rows)
        if self.ladder is not None:
            conf = self.ladder.confirmed()
            if conf is not None:
                w = conf["winner"]
                row = next(r for r in first if r["number"] == w["number"])
                return {**row, "confirmed": True, "confirmation": {**conf, "winner": w},
                        "spec": json_file(self.run.spec_file(w["number"]))}
        b = best_row(first, self.objective)
        if b is None:
            return None
        note = ("not confirmed: the ladder has not re-trained it yet" if self.ladder is not None
                else "a single proxy score (no ladder: nothing re-trained with other seeds)")
        return {**b, "confirmed": False, "note": note,
                "spec": json_file(self.run.spec_file(b["number"]))}

    def _units_done(self) -> float:
        n = float(self.evaluated_count())
        if self.ladder is not None:
            n += sum(self.ladder.plan[t.user_attrs["rung"] - 1].factor
                     for t in self.ladder.trials() if t.state != TrialState.RUNNING)
        return n

    def _eta(self, first: list[dict], done: int) -> float | None:
        """Seconds left: the mean wall time of the finished first-rung trainings times the
        first-rung trainings still to run (a ladder training counts as its factor), divided by
        the most trainings seen running at once. Steadier than elapsed / done, which jumps when two
        trials finish close together early on."""
        walls = [r["wall_seconds"] for r in first
                 if r["status"] == "complete" and r.get("wall_seconds")]
        if not walls:
            return None
        left = float(max(0, self.settings.trials - done))
        if self.ladder is not None:
            planned = sum(r.keep * r.factor * len(r.seeds) for r in self.ladder.plan)
            left += max(0.0, planned - (self._units_done() - self.evaluated_count()))
        return sum(walls) / len(walls) * left / self._peak_live

    def summary(self, rows: list[dict] | None = None) -> Summary:
        from .trials import TrialStatus as TS
        rows = self.rows() if rows is None else rows
        sm = Summary(target=self.settings.trials, attempt=self.attempt, score=self.settings.score)
        counts = {TS.COMPLETE: "complete", TS.PRUNED: "pruned", TS.FAILED: "failed",
                  TS.OVER_BUDGET: "over_budget", TS.BELOW_BAND: "below_band",
                  TS.DUPLICATE: "duplicates"}
        for r in self.first_rung(rows):
            attr = counts.get(r["status"])
            if attr:
                setattr(sm, attr, getattr(sm, attr) + 1)
        sm.running = len(self.live)
        first = self.first_rung(rows)
        sm.best = best_row(first, self.objective)
        if self.ladder is not None:
            sm.ladder_planned = self.ladder.planned()
            sm.ladder_done = self.ladder.finished()
            conf = self.ladder.confirmed()
            if conf is not None:
                w = conf["winner"]
                row = next(r for r in first if r["number"] == w["number"])
                sm.best = {**row, sm.score: w["mean"], "confirmed": True, "std": w["std"],
                           "seeds": len(w["runs"])}
            running = [c for c in self.live.values() if c["kind"] == "ladder"]
            if running:
                sm.phase = self.ladder.plan[running[0]["rung"] - 1].name
            elif sm.done >= sm.target and sm.ladder_done >= sm.ladder_planned:
                sm.phase = "done"
        sm.elapsed_s = self._elapsed()
        sm.eta_s = self._eta(first, sm.done)
        sm.message = self.exhausted or self._others_note(sm)
        return sm

    def _others_note(self, sm: Summary) -> str:
        """A shared study whose last places other drivers are still evaluating."""
        if not self.shared or self.live or sm.done >= sm.target:
            return ""
        others = self.book.committed_count() - sm.done
        if others <= 0 or self.sampling_open():
            return ""
        return (f"the study's {sm.target} architectures are taken; {others} of them still "
                f"evaluating under other drivers of study {self.settings.study_name!r} (their "
                f"results reach this run directory when it is resumed)")

    def _import_specs(self) -> None:
        """A shared study: the spec files of other drivers' architectures, written into this
        run directory from the study (so that it reports and exports the whole study)."""
        from ..fileio import write_text
        from ..arch.spec import from_dict
        for t in self.book.trials():
            a = t.user_attrs
            if (self.book.mine(t) or "spec" not in a or "proxy_spec" not in a
                    or self.run.spec_file(t.number).is_file()):
                continue  # (another driver may be between writing its two spec attributes)
            self.run.trial_dir(t.number).mkdir(parents=True, exist_ok=True)
            write_text(self.run.proxy_spec_file(t.number), from_dict(a["proxy_spec"]).to_json()
                       + "\n")
            write_text(self.run.spec_file(t.number), from_dict(a["spec"]).to_json() + "\n")

    def publish(self) -> Summary:
        from .runstore import pareto_front
        if self.shared:
            self._import_specs()
        rows = self.rows()
        best = self.best(rows)
        done = [r for r in self.first_rung(rows) if r["status"] == "complete"]
        self.run.write_results(rows, best, pareto_front(done, self.settings.score,
                                                        sign=self.objective.sign))
        sm = self.summary(rows)
        self.run.update_meta(elapsed_s=round(sm.elapsed_s, 3))
        if self.on_change:
            self.on_change(sm)
        return sm


def confirm_latency(engine: Engine, lut: Any, top: int = 3) -> None:
    """Measure (not predict) the latency of the final candidates -- the ``top`` best and the
    Pareto front -- on the LUT's device and settings, once no trial is training; recorded as
    ``measured_latency_ms``."""
    from ..evaluate.latency import measure
    from .runstore import pareto_front
    from ..arch.spec import load
    rows = engine.first_rung()
    obj = engine.objective
    done = sorted((r for r in rows if r["status"] == "complete"), key=lambda r: -obj.of_row(r))
    chosen = {r["number"] for r in done[:top]}
    chosen |= {r["number"] for r in pareto_front(done, obj.score, sign=obj.sign)}
    run = engine.run
    measured = run.measured_latency()
    for n in sorted(chosen - set(measured)):
        m = measure(load(run.spec_file(n)), lut.device, lut.threads, lut.batch, lut.channels_last,
                    lut.warmup, lut.reps, rounds=lut.rounds, amp=lut.amp)
        measured[n] = round(m.value(lut.statistic), 4)
    run.write_measured_latency(measured)


def json_file(path: Path) -> Any:
    import json
    return json.loads(Path(path).read_text(encoding="utf-8"))


def best_row(rows: list[dict], objective: Objective) -> dict | None:
    done = [r for r in rows if r["status"] == "complete" and objective.of_row(r) is not None]
    return max(done, key=lambda r: (objective.of_row(r), -r["macs"]), default=None)


def engine_record(settings: Settings, budget, n_train: int, epochs: int, steps: int) -> dict:
    """What the engine actually runs (``run.json`` field ``engine``): proxy images, validation
    images, epochs and steps, whether ASHA runs, the ladder's rungs, the seeds."""
    from .trials import ladder_cost, ladder_plan
    t = budget.train
    plan = ladder_plan(settings.trials) if settings.uses_ladder else None
    images = min(n_train, max(t.batch_size, int(n_train * t.train_fraction))) \
        if t.train_fraction < 1 else n_train
    return {"proxy": budget.mode, "proxy_images": images if settings.proxy != "zero-cost" else 0,
            "val_images": budget.val_size if settings.proxy != "zero-cost" else 0,
            "epochs": epochs if settings.proxy != "zero-cost" else 0,
            "steps": steps if settings.proxy != "zero-cost" else 0,
            "asha": settings.uses_asha(epochs),
            "ladder": [r.to_dict() for r in plan] if plan else None,
            "ladder_cost_units": ladder_cost(settings.trials, plan) if plan else None,
            "seeds": {"init": t.seed, "data": t.data_seed, "sampler": settings.seed},
            "flops_min": settings.band_floor, "sampler": settings.sampler}


# ---------------------------------------------------------------------------------------------
# the driver

@dataclass
class Outcome:
    summary: Summary
    rows: list[dict]
    best: dict | None
    pareto: list[dict]
    interrupted: bool = False


def run_search(run, settings: Settings, space: SearchSpace, splits: Any,
               on_change: Callable[[Summary], None] | None = None, lut: Any = None,
               quiet: bool = True, storage: str | None = None,
               checkpoints: bool = True,
               on_lost: Callable[[str], None] | None = None) -> Outcome:
    """Run (or continue) the search recorded in ``run`` until ``settings.trials`` architectures
    are evaluated (and the ladder has confirmed its winner), the time budget is spent, or the
    space is exhausted. ``storage``: Ray Tune's storage (default ``run/ray``); ``checkpoints``:
    whether trials checkpoint into it (every node must see it); ``on_lost``: called with the
    head's address when the Ray head stops answering (see :func:`raytune.run`)."""
    from optuna.storages.journal import JournalFileBackend

    from . import raytune
    from ..fileio import remove_stale_temps
    from .runstore import pareto_front
    from ..evaluate.train import plan

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cluster = raytune.connect(settings.address, quiet)
    meta = run.meta
    attempt = len(meta.get("attempts", [])) + 1
    budget = settings.proxy_budget(space.name)
    _, steps, epochs = plan(len(splits.train), budget.train)
    run.update_meta(status="running", engine=engine_record(settings, budget, len(splits.train),
                                                            epochs, steps),
                    attempts=meta.get("attempts", []) + [
                        {"attempt": attempt, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                         "trials": settings.trials, "pid": os.getpid()}])
    stale = remove_stale_temps(run.path)  # left by writes a crash interrupted (we hold the lock)
    if stale:
        log.warning("removed %d temporary files of interrupted writes", stale)
    if run.release_journal_lock():
        log.warning("study journal: removed the write lock of an interrupted append")
    if not meta.get("driver"):  # this run directory's name in a study (its trials' "driver")
        import uuid
        run.update_meta(driver=uuid.uuid4().hex[:12])
    if settings.storage:
        from .studystore import open_shared
        study_storage = open_shared(settings.storage)
    else:
        torn = run.repair_journal()
        if torn:
            log.warning("study journal: removed a torn last record (%d bytes)", torn)
        from .compat import BatchedJournalStorage
        study_storage = BatchedJournalStorage(JournalFileBackend(str(run.journal)))
    engine = Engine(run, settings, space, splits.num_classes, attempt, study_storage, lut,
                    on_change, epochs)
    engine.storage = storage or str(run.ray_dir())
    engine.checkpoints = checkpoints
    interrupted = raytune.run(engine, splits, cluster, epochs, on_lost)
    if lut is not None and not interrupted:
        confirm_latency(engine, lut)
    sm = engine.publish()
    rows = engine.rows()
    meta = run.meta
    atts = meta.get("attempts", [])
    if atts:
        atts[-1]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    finished = sm.done >= settings.trials and (engine.ladder is None
                                               or sm.ladder_done >= sm.ladder_planned)
    status = "interrupted" if interrupted else ("finished" if finished else "stopped")
    run.update_meta(status=status, attempts=atts)
    first = engine.first_rung(rows)
    return Outcome(sm, rows, engine.best(rows),
                   pareto_front([r for r in first if r["status"] == "complete"], settings.score,
                                sign=engine.objective.sign), bool(interrupted))
