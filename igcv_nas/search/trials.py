"""The trial book: what each sampled architecture became, kept in an Optuna study (no Ray here).

The search's bookkeeping over an :class:`optuna.Study`, so that it can be unit-tested with
Optuna's in-memory storage and used by any runner (:class:`igcv_nas.search.engine.Engine` drives it;
:mod:`igcv_nas.search.raytune` adapts the engine to Ray Tune).

What a sampler learns from is what was *evaluated*: only trained architectures are told
COMPLETE (with their score) or PRUNED. Everything else is told FAIL, with the reason in the
``status`` user attribute, so that no sampler counts it toward its start-up phase, its
population or its model of good regions:

* ``over-budget`` -- sampled, a cost above a budget; never trained.
* ``below-band``  -- sampled, MACs below the band's floor (``--flops-min``); never trained.
* ``duplicate``   -- the same canonical architecture id as an earlier trial (``duplicate_of``);
  never trained again; its table row shows the original's scores.
* ``evaluating``  -- handed to proxy evaluation (state RUNNING), then ``complete`` (COMPLETE),
  ``pruned`` (PRUNED: stopped early by ASHA or the time budget, with its last report) or
  ``failed`` (FAIL, with the reason).
* ``lost``        -- asked, but the driver died before it was decided (FAIL on resume).
* ``surplus``     -- a shared study only: in budget and new, but other drivers had taken the
  study's ``--trials`` places first; never trained.

The multi-fidelity ladder (:class:`Ladder`) keeps its promotions and confirmation re-trainings
in a second study of the same storage (:data:`LADDER_STUDY`), one trial per training, each
naming its architecture's trial (``source``), rung and seeds; the sampler's study holds one
trial per architecture, scored at the first rung.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from .compat import trial_by_number

STUDY_NAME = "igcv-search"
LADDER_STUDY = "igcv-search/ladder"


class TrialStatus(str, Enum):
    """What a trial became (column ``status`` of the trials table; the strings are stored)."""
    OVER_BUDGET = "over-budget"
    BELOW_BAND = "below-band"
    DUPLICATE = "duplicate"
    EVALUATING = "evaluating"
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"
    LOST = "lost"
    SURPLUS = "surplus"
    RUNNING = "running"  # table only: an evaluating trial seen from outside
    WAITING = "waiting"  # written by versions before 0.2 (a duplicate of a running trial)

    def __str__(self) -> str:
        return self.value


EVALUATED = (TrialStatus.COMPLETE, TrialStatus.PRUNED, TrialStatus.FAILED)
REJECTED = (TrialStatus.OVER_BUDGET, TrialStatus.BELOW_BAND, TrialStatus.DUPLICATE)
# a shared study: how long a driver waits for another driver's lower-numbered trial to be decided
# (a proposal takes milliseconds), and how old an undecided trial is before it counts as one
# whose driver died while asking
SETTLE_WAIT_S, SETTLE_STALE_S = 10.0, 120.0


def status_of(t: optuna.trial.FrozenTrial) -> TrialStatus:
    s = t.user_attrs.get("status")
    if s is None:
        return TrialStatus.RUNNING if t.state == TrialState.RUNNING else TrialStatus.LOST
    return TrialStatus(s)


@dataclass
class Proposal:
    """An in-budget, new architecture handed to evaluation."""
    number: int
    attrs: dict
    payload: Any = None  # what ``propose`` returned beside the attributes (the candidate)


@dataclass
class Objective:
    """How scores become the values told to the study: ``sign * scores[score]`` (maximised),
    and MACs (minimised) as the second value of a Pareto search."""
    score: str = "val_acc"
    sign: int = 1
    pareto: bool = False

    def values(self, scores: dict, macs: int) -> float | list[float]:
        v = self.sign * float(scores[self.score])
        return [v, float(macs)] if self.pareto else v

    def of_row(self, row: dict) -> float | None:
        v = row.get(self.score)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else self.sign * v


class TrialBook:
    """The sampler's study as a ledger of architectures.

    Args:
        study: the sampler's Optuna study.
        objective: how scores become the values told to the study.
        driver: this driver's name (recorded on the trials it asks in a shared study).
        shared: whether several drivers share the study.

    Attributes:
        study: the sampler's study.
        objective: the objective.
        driver: this driver's name.
        shared: whether the study is shared.
        last_stop: how the last :meth:`ask` ended: ``found``, ``draws``, ``time`` or
            ``surplus``.
        last_draws: the draws the last :meth:`ask` took.

    It raises nothing of its own: errors are the study storage's (Optuna's).
    """

    def __init__(self, study: optuna.Study, objective: Objective, driver: str | None = None,
                 shared: bool = False):
        self.study, self.objective = study, objective
        self.driver, self.shared = driver, shared
        self.last_stop, self.last_draws = "draws", 0  # how the last ask ended, and its draws
        self._live: dict[int, optuna.Trial] = {}  # number -> handle, for evaluating trials

    # -- reading ------------------------------------------------------------------------------
    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def count(self, *statuses: TrialStatus) -> int:
        return sum(1 for t in self.trials() if status_of(t) in statuses)

    def evaluated_count(self) -> int:
        return self.count(*EVALUATED)

    def committed_count(self) -> int:
        """Architectures evaluated or being evaluated (in a shared study: by every driver)."""
        return self.count(*EVALUATED, TrialStatus.EVALUATING)

    def mine(self, t: optuna.trial.FrozenTrial) -> bool:
        """Whether this driver asked ``t`` (a journal study has one driver: every trial)."""
        if not self.shared:
            return True
        return t.user_attrs.get("driver") == self.driver

    def by_arch(self) -> dict[str, optuna.trial.FrozenTrial]:
        """arch id -> the trial that evaluated (or is evaluating) it."""
        out: dict[str, optuna.trial.FrozenTrial] = {}
        for t in self.trials():
            if status_of(t) in EVALUATED + (TrialStatus.EVALUATING,) and "arch_id" in t.user_attrs:
                out.setdefault(t.user_attrs["arch_id"], t)
        return out

    def _handle(self, number: int) -> optuna.Trial:
        return self._live.get(number) or trial_by_number(self.study, number)

    # -- asking -------------------------------------------------------------------------------
    def ask(self, propose: Callable[[optuna.Trial], tuple[dict, Any]],
            judge: Callable[[dict], tuple[TrialStatus, str] | None],
            max_draws: int, limit: int | None = None, deadline_s: float | None = None,
            on_draws: Callable[[int], None] | None = None,
            voice_s: float = 5.0) -> Proposal | None:
        """Draw until a new architecture within the budgets comes up (None after ``max_draws``,
        after ``deadline_s`` seconds, or in a shared study once ``limit`` architectures are
        committed; :attr:`last_stop` says which: ``found``, ``draws``, ``time`` or ``surplus``,
        and :attr:`last_draws` how many draws it took). ``on_draws(n)`` is called every
        ``voice_s`` seconds of drawing with the draws so far, so that a budget that admits
        almost nothing is not silent.

        ``propose(trial)`` samples an architecture and returns ``(attrs, payload)``; ``attrs``
        holds at least ``arch_id`` and ``macs`` and is stored on the trial. ``judge(attrs)``
        returns ``(status, reason)`` to reject it as over budget or below the band, or None.

        In a shared study (several drivers) an in-budget, new architecture is *settled* before
        it is claimed (:meth:`_settle`): the study's lower-numbered trials decide first, so that
        every driver agrees which trial holds an architecture and which ``limit`` trials are
        the study's."""
        import time as _time
        by_arch = self.by_arch()
        start = last_voice = _time.monotonic()
        self.last_stop, self.last_draws = "draws", 0
        for i in range(max_draws):
            now = _time.monotonic()
            if i and deadline_s is not None and now - start >= deadline_s:
                self.last_stop = "time"
                return None
            if i and on_draws is not None and now - last_voice >= voice_s:
                last_voice = now
                on_draws(i)
            self.last_draws = i + 1
            tr = self.study.ask()
            if self.shared:
                tr.set_user_attr("driver", self.driver)
            attrs, payload = propose(tr)
            for k, v in attrs.items():
                tr.set_user_attr(k, v)
            verdict = judge(attrs)
            if verdict is not None:
                self._reject(tr, verdict[0], verdict[1])
                continue
            orig = by_arch.get(attrs["arch_id"])
            if orig is not None:
                tr.set_user_attr("duplicate_of", orig.number)
                self._reject(tr, TrialStatus.DUPLICATE, f"same architecture as trial {orig.number}"
                             + self._of_driver(orig))
                continue
            if self.shared:
                settled = self._settle(tr.number, attrs["arch_id"], limit)
                if settled is not None:
                    status, reason, dup_of = settled
                    if dup_of is not None:
                        tr.set_user_attr("duplicate_of", dup_of)
                    self._reject(tr, status, reason)
                    if status == TrialStatus.SURPLUS:
                        self.last_stop = "surplus"
                        return None
                    by_arch = self.by_arch()
                    continue
            tr.set_user_attr("status", TrialStatus.EVALUATING.value)
            self._live[tr.number] = tr
            self.last_stop = "found"
            return Proposal(tr.number, {**attrs, "status": TrialStatus.EVALUATING.value}, payload)
        return None

    def _of_driver(self, t: optuna.trial.FrozenTrial) -> str:
        return f" (of driver {t.user_attrs.get('driver', '?')})" if self.shared else ""

    def _settle(self, number: int, arch_id: str, limit: int | None
                ) -> tuple[TrialStatus, str, int | None] | None:
        """A shared study: whether trial ``number`` (in budget, new when its draw began) may
        claim ``arch_id``. Only lower-numbered trials decide it; one that another driver has
        not decided yet (no status: its proposal is under way) is waited for, up to
        :data:`SETTLE_WAIT_S`, unless it is older than :data:`SETTLE_STALE_S` (its driver died
        while asking). Then: a lower trial holding the architecture makes this one its
        duplicate, and ``limit`` lower trials evaluated or evaluating make it surplus."""
        import time as _time
        deadline = _time.monotonic() + SETTLE_WAIT_S
        while True:
            lower = [t for t in self.study.get_trials(deepcopy=False) if t.number < number]
            now = _time.time()
            pending = [t for t in lower if t.state == TrialState.RUNNING
                       and "status" not in t.user_attrs and t.datetime_start is not None
                       and now - t.datetime_start.timestamp() < SETTLE_STALE_S]
            if not pending or _time.monotonic() > deadline:
                break
            _time.sleep(0.05)
        held = [t for t in lower if status_of(t) in EVALUATED + (TrialStatus.EVALUATING,)]
        for t in held:
            if t.user_attrs.get("arch_id") == arch_id:
                return (TrialStatus.DUPLICATE,
                        f"same architecture as trial {t.number}{self._of_driver(t)}", t.number)
        if limit is not None and len(held) >= limit:
            return (TrialStatus.SURPLUS, f"the study's {limit} trials were taken by other "
                                         f"drivers first", None)
        return None

    def _reject(self, tr: optuna.Trial, status: TrialStatus, reason: str) -> None:
        tr.set_user_attr("status", status.value)
        tr.set_user_attr("reason", reason)
        self.study.tell(tr, state=TrialState.FAIL)

    # -- results ------------------------------------------------------------------------------
    def annotate(self, number: int, **attrs: Any) -> None:
        tr = self._handle(number)
        for k, v in attrs.items():
            tr.set_user_attr(k, v)

    def complete(self, number: int, scores: dict, macs: int) -> None:
        tr = self._handle(number)
        tr.set_user_attr("scores", scores)
        tr.set_user_attr("status", TrialStatus.COMPLETE.value)
        self.study.tell(number, self.objective.values(scores, macs))
        self._live.pop(number, None)

    def report(self, number: int, value: float, step: int) -> None:
        """An intermediate score (for Optuna pruners and the study's history)."""
        if step in self.study.get_trials(deepcopy=False)[number].intermediate_values:
            return
        self._handle(number).report(value, step)

    def prune(self, number: int, reason: str, scores: dict | None = None) -> None:
        tr = self._handle(number)
        tr.set_user_attr("status", TrialStatus.PRUNED.value)
        tr.set_user_attr("reason", reason)
        if scores:
            tr.set_user_attr("scores", scores)
        self.study.tell(number, state=TrialState.PRUNED)
        self._live.pop(number, None)

    def fail(self, number: int, reason: str) -> None:
        tr = self._handle(number)
        tr.set_user_attr("status", TrialStatus.FAILED.value)
        tr.set_user_attr("reason", reason)
        self.study.tell(number, state=TrialState.FAIL)
        self._live.pop(number, None)

    # -- resume -------------------------------------------------------------------------------
    def recover(self, can_continue: Callable[[int], bool]) -> list[Proposal]:
        """After a driver stopped: the trials that were evaluating and ``can_continue`` (their
        files are there) are returned to be evaluated again (from their checkpoints); every other
        undecided trial is told FAIL as ``lost``; duplicates left waiting by older versions are
        settled as duplicates."""
        again = []
        for t in self.trials():
            if t.state != TrialState.RUNNING or not self.mine(t):
                continue  # another driver's trials are that driver's to recover
            st = t.user_attrs.get("status")
            if st == TrialStatus.EVALUATING.value and can_continue(t.number):
                again.append(Proposal(t.number, dict(t.user_attrs)))
                continue
            tr = trial_by_number(self.study, t.number)
            if st == TrialStatus.WAITING.value:
                self._reject(tr, TrialStatus.DUPLICATE,
                             f"same architecture as trial {t.user_attrs.get('duplicate_of')}")
                continue
            tr.set_user_attr("status", TrialStatus.LOST.value)
            tr.set_user_attr("reason", "the driver stopped before this sample was decided")
            self.study.tell(t.number, state=TrialState.FAIL)
        return again

    # -- the table ----------------------------------------------------------------------------
    def rows(self, measured: dict[int, float] | None = None) -> list[dict]:
        """One dict per trial (the trials-table row; see :data:`runstore.TABLE_COLUMNS`); a
        duplicate shows its original's scores. ``measured``: number -> measured latency (ms)."""
        measured = measured or {}
        trials = self.trials()
        rows = []
        for t in trials:
            a = t.user_attrs
            status = status_of(t)
            if status == TrialStatus.EVALUATING and t.state == TrialState.RUNNING:
                status = TrialStatus.RUNNING
            row = {"number": t.number, "rung": 0, "seed": None, "status": status.value,
                   "arch_id": a.get("arch_id"), "macs": a.get("macs"), "params": a.get("params"),
                   "latency_ms": a.get("latency_ms"), "measured_latency_ms": measured.get(t.number),
                   "wall_seconds": a.get("wall_seconds"), "node": a.get("node"),
                   "retries": a.get("retries"), "attempt": a.get("attempt"),
                   "resumed_in": a.get("resumed_in"), "driver": a.get("driver"),
                   "duplicate_of": a.get("duplicate_of"), "parent": a.get("parent"),
                   "reason": a.get("reason"), "notes": a.get("notes"),
                   "started": _iso(t.datetime_start),
                   "finished": _iso(t.datetime_complete)}
            scores = a.get("scores")
            dup_of = a.get("duplicate_of")
            if scores is None and status == TrialStatus.DUPLICATE and dup_of is not None:
                scores = trials[dup_of].user_attrs.get("scores")
            row.update(scores or {})
            rows.append(row)
        return rows


def _iso(d) -> str | None:
    return d.isoformat(timespec="seconds") if d else None


# ---------------------------------------------------------------------------------------------
# the multi-fidelity ladder

@dataclass(frozen=True)
class Rung:
    """One rung above the first: the ``keep`` best of the rung below are trained again at
    ``factor`` times the first rung's training images, once per seed offset in ``seeds``
    (offset 0: the search's own seeds; k > 0: fresh initialisation and data-order seeds)."""
    name: str
    keep: int
    factor: int
    seeds: tuple[int, ...] = (0,)

    def to_dict(self) -> dict:
        return {"name": self.name, "keep": self.keep, "factor": self.factor,
                "seeds": list(self.seeds)}


def ladder_plan(trials: int, confirm_seeds: int = 2) -> tuple[Rung, ...]:
    """The default ladder for ``trials`` architectures at the first rung: the best quarter
    (at least 2) promoted to 3x the training images, then the best 2 of those (3 from 12
    trials) re-trained at that budget with ``confirm_seeds`` fresh seeds each.

    Args:
        trials: architectures evaluated at the first rung.
        confirm_seeds: fresh seeds each confirmed architecture is re-trained with.

    Returns:
        The two rungs: ``promote`` (keep ``max(2, ceil(trials / 4))``, factor 3, seed offset 0)
        and ``confirm`` (keep 2, or 3 from 12 trials, at most the promoted count; factor 3;
        seed offsets 1 to ``confirm_seeds``). Raises nothing."""
    k1 = max(2, math.ceil(trials / 4))
    k2 = min(k1, 3 if trials >= 12 else 2)
    return (Rung("promote", k1, 3, (0,)),
            Rung("confirm", k2, 3, tuple(range(1, confirm_seeds + 1))))


def ladder_cost(trials: int, plan: tuple[Rung, ...]) -> float:
    """Planned trainings in units of one first-rung training.

    Args:
        trials: architectures trained at the first rung (1 unit each).
        plan: the rungs above it (:func:`ladder_plan`).

    Returns:
        ``trials`` plus, for each rung, ``keep x factor x len(seeds)``. Raises nothing."""
    return trials + sum(r.keep * r.factor * len(r.seeds) for r in plan)


@dataclass
class Job:
    """One ladder training: architecture trial ``source`` at rung ``rung`` (1-based index into
    the plan) with seed offset ``seed``; ``number`` is its trial in the ladder study."""
    number: int
    source: int
    rung: int
    seed: int
    attrs: dict = field(default_factory=dict)


class Ladder:
    """Promotions and confirmations over a :class:`TrialBook` (synchronous: a rung starts once
    every training of the rung below has finished)."""

    def __init__(self, study: optuna.Study, book: TrialBook, plan: tuple[Rung, ...]):
        self.study, self.book, self.plan = study, book, plan
        self._live: dict[int, optuna.Trial] = {}

    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def _runs(self, rung: int) -> list[optuna.trial.FrozenTrial]:
        return [t for t in self.trials() if t.user_attrs.get("rung") == rung]

    def planned(self) -> int:
        return sum(r.keep * len(r.seeds) for r in self.plan)

    def finished(self) -> int:
        return sum(1 for t in self.trials() if t.state != TrialState.RUNNING)

    def _ranked(self, rung: int) -> list[tuple[float, int]]:
        """(score, source) of the architectures that finished rung ``rung`` (0: the sampler's
        study), best first; a rung's score of an architecture is the mean over its seeds."""
        obj = self.book.objective
        if rung == 0:
            done = [(obj.of_row(t.user_attrs.get("scores", {})), t.number)
                    for t in self.book.trials() if status_of(t) == TrialStatus.COMPLETE]
        else:
            by: dict[int, list[float]] = {}
            for t in self._runs(rung):
                if t.state == TrialState.COMPLETE:
                    v = obj.of_row(t.user_attrs.get("scores", {}))
                    if v is not None:
                        by.setdefault(t.user_attrs["source"], []).append(v)
            done = [(statistics.fmean(v), s) for s, v in by.items()]
        done = [(v, n) for v, n in done if v is not None]
        # ties: the cheaper architecture first, then the earlier trial
        macs = {t.number: t.user_attrs.get("macs", 0) for t in self.book.trials()}
        return sorted(done, key=lambda d: (-d[0], macs.get(d[1], 0), d[1]))

    def next_jobs(self, rung0_done: bool) -> list[tuple[int, int, int]]:
        """The (source, rung, seed) trainings that can start now and are not yet in the study:
        rung r starts when rung r-1 has no training left running (rung 0: ``rung0_done``)."""
        if not rung0_done:
            return []
        existing = {(t.user_attrs["source"], t.user_attrs["rung"], t.user_attrs["seed"])
                    for t in self.trials()}
        for r, rung in enumerate(self.plan, start=1):
            if r > 1 and any(t.state == TrialState.RUNNING for t in self._runs(r - 1)):
                return []
            ranked = self._ranked(r - 1)
            if r > 1:  # only what the rung below was asked to train
                ranked = [d for d in ranked if any(t.user_attrs["source"] == d[1]
                                                   for t in self._runs(r - 1))]
            chosen = [n for _, n in ranked[:rung.keep]]
            todo = [(n, r, s) for n in chosen for s in rung.seeds if (n, r, s) not in existing]
            if todo:
                return todo
            if any(t.state == TrialState.RUNNING for t in self._runs(r)):
                return []
        return []

    def start(self, source: int, rung: int, seed: int, attrs: dict) -> Job:
        tr = self.study.ask()
        info = {"source": source, "rung": rung, "seed": seed,
                "arch_id": attrs.get("arch_id"), "macs": attrs.get("macs"),
                "params": attrs.get("params"), "status": TrialStatus.EVALUATING.value}
        for k, v in info.items():
            tr.set_user_attr(k, v)
        self._live[tr.number] = tr
        return Job(tr.number, source, rung, seed, info)

    def _handle(self, number: int) -> optuna.Trial:
        return self._live.get(number) or trial_by_number(self.study, number)

    def complete(self, number: int, scores: dict) -> None:
        tr = self._handle(number)
        tr.set_user_attr("scores", scores)
        tr.set_user_attr("status", TrialStatus.COMPLETE.value)
        self.study.tell(number, self.book.objective.sign * float(scores[self.book.objective.score]))
        self._live.pop(number, None)

    def fail(self, number: int, reason: str, status: TrialStatus = TrialStatus.FAILED) -> None:
        tr = self._handle(number)
        tr.set_user_attr("status", status.value)
        tr.set_user_attr("reason", reason)
        self.study.tell(number, state=TrialState.FAIL if status != TrialStatus.PRUNED
                        else TrialState.PRUNED)
        self._live.pop(number, None)

    def annotate(self, number: int, **attrs: Any) -> None:
        tr = self._handle(number)
        for k, v in attrs.items():
            tr.set_user_attr(k, v)

    def recover(self, can_continue: Callable[[int], bool]) -> list[Job]:
        again = []
        for t in self.trials():
            if t.state != TrialState.RUNNING:
                continue
            if can_continue(t.number):
                a = t.user_attrs
                again.append(Job(t.number, a["source"], a["rung"], a["seed"], dict(a)))
            else:
                self.fail(t.number, "the driver stopped before this training started",
                          TrialStatus.LOST)
        return again

    def rows(self) -> list[dict]:
        out = []
        for t in self.trials():
            a = t.user_attrs
            st = status_of(t)
            if st == TrialStatus.EVALUATING and t.state == TrialState.RUNNING:
                st = TrialStatus.RUNNING
            row = {"number": a["source"], "rung": a["rung"], "seed": a["seed"],
                   "ladder_trial": t.number, "status": st.value, "arch_id": a.get("arch_id"),
                   "macs": a.get("macs"), "params": a.get("params"),
                   "wall_seconds": a.get("wall_seconds"), "node": a.get("node"),
                   "retries": a.get("retries"), "attempt": a.get("attempt"),
                   "resumed_in": a.get("resumed_in"),
                   "reason": a.get("reason"), "notes": a.get("notes"),
                   "started": _iso(t.datetime_start),
                   "finished": _iso(t.datetime_complete)}
            row.update(a.get("scores", {}))
            out.append(row)
        return out

    def confirmed(self) -> dict | None:
        """The confirmed winner: among the architectures of the last rung, the best mean score
        over its fresh-seed re-trainings (never a single run); None until one has finished."""
        last = len(self.plan)
        obj = self.book.objective
        runs: dict[int, list[tuple[int, dict]]] = {}
        for t in self._runs(last):
            if t.state == TrialState.COMPLETE:
                runs.setdefault(t.user_attrs["source"], []).append(
                    (t.user_attrs["seed"], t.user_attrs["scores"]))
        if not runs:
            return None
        summary = []
        for src, rs in runs.items():
            vals = [r[1][obj.score] for r in rs]
            summary.append({"number": src, "seeds": [r[0] for r in rs], "runs": vals,
                            "mean": statistics.fmean(vals),
                            "std": statistics.stdev(vals) if len(vals) > 1 else None,
                            "complete": len(vals) == len(self.plan[-1].seeds)})
        summary.sort(key=lambda s: -obj.sign * s["mean"])
        return {"score": obj.score, "winner": summary[0], "candidates": summary}
