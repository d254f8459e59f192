"""A search's settings and the rules its budgets must meet, checked before anything starts.

:class:`Settings` holds everything a search is asked (budgets, space, target, trials, sampler,
proxy, scheduler, resources); the functions here check it against the space (the MACs floor and
band, the exact params minimum, the latency floor, a target the space's strides reach) and raise
:class:`SearchError` (one line, what is accepted). Nothing here trains, draws architectures or
starts Ray: :mod:`igcv_nas.search.engine` runs a search from these settings.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import optuna

from ..errors import IGCVError
from ..arch import cost as costmod
from ..arch.space import SearchSpace
from ..arch.spec import NetworkSpec
from .trials import Objective

SAMPLERS = ("tpe", "evolution", "nsga2", "random")
OBJECTIVES = ("accuracy", "pareto")
PROXY_MODES = ("training", "zero-cost", "both")
SCHEDULERS = ("ladder", "asha", "none")
LATENCY_PREDICTORS = ("lut", "learned")
# training scores a search can maximise: name -> sign (val_loss and tse: lower is better)
TRAINING_SCORES = {"val_acc": 1, "val_loss": -1, "tse": -1}
# the names of igcv_nas.evaluate.zero_cost.PROXIES (here so that argument errors need no torch)
ZERO_COST_METRICS = ("synflow", "naswot", "grad_norm", "zico")
NAMED_TARGETS = {"imagenet": (224, 1000), "cifar10": (32, 10), "cifar100": (32, 100)}
FLOPS_MIN_FRACTION = 0.7  # default floor of the MACs band: 0.7 x --flops
# ASHA needs a rung that says something: after 1 of 2 CPU-budget epochs every architecture is
# still near chance (0.08-0.11 for all 11 trials it pruned in a default CPU search), so early
# stopping needs at least 3 epochs, and its grace period lies past the warm-up
ASHA_MIN_EPOCHS = 3
ASHA_REDUCTION = 3
RUNG0_TIME_SHARE = 0.55  # with --time-budget and the ladder: new architectures until 55% of it
MAX_SEED = 2**31 - 1  # sampler seed + 7919 per resumed attempt stays below 2**32 for 2e5 attempts
MIN_TIME_BUDGET_S = 10.0  # a shorter --time-budget ends before a trial (and Ray) can start
ASK_SECONDS = 10.0  # drawing for one suggestion pauses after this long (Ray acts on signals)
MAX_DRAWS = 2000  # samples tried per suggestion before the space counts as exhausted
# settings a resume may change; any other change is refused unless forced
RESUME_MUTABLE = ("trials", "time_budget_s", "cpus_per_trial", "gpus_per_trial",
                  "max_concurrent", "address", "data_dir", "max_failures", "storage_path")


class SearchError(IGCVError, ValueError):
    """Settings or a state that a search cannot start from (one line, what is accepted)."""


# ---------------------------------------------------------------------------------------------
# settings

@dataclass(frozen=True)
class Settings:
    """Everything that defines a search (stored in ``run.json``; resume reads it back).

    Attributes:
        space: the search space: a shipped space's name or a YAML file.
        target: ``space``, ``imagenet``, ``cifar10``, ``cifar100`` or ``RES:CLASSES``.
        macs: MACs budget (``--flops``); None: no MACs budget.
        macs_min: floor of the MACs band; None: ``FLOPS_MIN_FRACTION`` x ``macs``.
        params: parameter budget; None: none.
        latency_ms: latency budget in ms; None: none.
        latency_device: the device latency is predicted for: ``cpu``, ``cuda`` or ``cuda:N``.
        lut: a latency LUT file (built there when missing); None: ``latency_lut.json`` in
            the run directory, built when missing (with a latency budget only).
        latency_predictor: ``lut`` (sum of measured pieces) or ``learned`` (latency_model).
        dataset: ``cifar10``, ``cifar100`` or an image-folder path.
        data_dir: where the data sets are; None: the default data directory.
        trials: architectures to evaluate (at least 1).
        time_budget_s: wall-clock budget in seconds; None: none.
        objective: ``accuracy`` or ``pareto``.
        proxy: ``training``, ``zero-cost`` or ``both``.
        zero_cost_metric: the score when ``proxy`` is ``zero-cost``.
        sampler: ``tpe``, ``evolution``, ``nsga2`` or ``random``.
        seed: the search's seed (0 to ``MAX_SEED``).
        cpus_per_trial: CPUs reserved per trial (> 0).
        gpus_per_trial: GPUs reserved per trial (>= 0).
        max_concurrent: trials running at once; None: as many as fit.
        address: a Ray cluster's ``HOST:PORT``; None: a local Ray.
        storage_path: Ray Tune storage (path or URI); None: ``RUN_DIR/ray``.
        storage: the Optuna study's storage URL; None: ``RUN_DIR/study.journal``.
        study_name: the study's name in that storage.
        budget: ``ProxyBudget.to_dict()``; None: the device default.
        scheduler: ``ladder``, ``asha`` or ``none`` (ladder/asha only where they apply).
        score_by: the training score maximised: ``val_acc``, ``val_loss`` or ``tse``.
        max_failures: retries of a failed trial (>= 0).

    Raises:
        SearchError: (on construction) a value not among its choices or out of its range, an
            unreadable ``target``, ``evolution`` with ``pareto``, or ``storage`` with the
            ladder; one line naming the flag."""
    space: str = "igcv3"
    target: str = "space"            # space | imagenet | cifar10 | cifar100 | RES:CLASSES
    macs: int | None = None
    macs_min: int | None = None        # floor of the MACs band; None: FLOPS_MIN_FRACTION x macs
    params: int | None = None
    latency_ms: float | None = None
    latency_device: str = "cpu"
    lut: str | None = None
    latency_predictor: str = "lut"     # lut (sum of measured pieces) | learned (latency_model)
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
    storage_path: str | None = None    # Ray Tune storage (path or URI); None: RUN_DIR/ray
    storage: str | None = None         # the Optuna study's storage URL; None: RUN_DIR/study.journal
    study_name: str = "igcv-search"    # the study's name in that storage
    budget: dict | None = None         # ProxyBudget.to_dict(); None: the device default
    scheduler: str = "ladder"          # ladder | asha | none (ladder/asha only where they apply)
    score_by: str = "val_acc"          # the training score maximised: val_acc, val_loss, tse
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
        if self.time_budget_s is not None and not (MIN_TIME_BUDGET_S <= self.time_budget_s
                                                   < float("inf")):
            raise SearchError(f"--time-budget {self.time_budget_s:g} s; accepted: a duration of "
                              f"at least {MIN_TIME_BUDGET_S:g} s, such as 30m or 2h (a shorter "
                              f"one ends before any trial can finish)")
        if not self.cpus_per_trial > 0:
            raise bad("--cpus-per-trial", self.cpus_per_trial, "a number > 0")
        if self.gpus_per_trial < 0:
            raise bad("--gpus-per-trial", self.gpus_per_trial, "a number >= 0")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise bad("--max-concurrent", self.max_concurrent, "an integer >= 1")
        if self.max_failures < 0:
            raise bad("--max-failures", self.max_failures, "an integer >= 0")
        if not 0 <= self.seed <= MAX_SEED:
            raise bad("--seed", self.seed, f"an integer from 0 to {MAX_SEED:,} (a resume adds "
                                           f"7919 per attempt; samplers take 32-bit seeds)")
        if self.latency_predictor not in LATENCY_PREDICTORS:
            raise bad("--latency-predictor", self.latency_predictor, ", ".join(LATENCY_PREDICTORS))
        if self.scheduler not in SCHEDULERS:
            raise bad("--scheduler", self.scheduler, ", ".join(SCHEDULERS))
        if self.score_by not in TRAINING_SCORES:
            raise bad("--score", self.score_by, ", ".join(TRAINING_SCORES))
        for name, value in (("--flops", self.macs), ("--params", self.params)):
            if value is not None and not value >= 1:
                raise bad(name, value, "a positive count such as 300M")
        if self.latency_ms is not None and not 0 < self.latency_ms < float("inf"):
            raise bad("--latency", self.latency_ms, "a positive duration in ms")
        if self.latency_device not in ("cpu", "cuda") and not str(
                self.latency_device).startswith("cuda:"):
            raise bad("--device", self.latency_device, "cpu, cuda, cuda:N")
        if self.macs_min is not None and (self.macs_min < 0 or (
                self.macs is not None and self.macs_min > self.macs)):
            top = self.macs if self.macs is not None else "-"
            raise bad("--flops-min", self.macs_min, f"0 (no floor) up to --flops ({top})")
        if self.sampler == "evolution" and self.objective == "pareto":
            raise SearchError("--sampler evolution is single-objective; with --objective pareto "
                              "use nsga2, tpe or random")
        if not (isinstance(self.study_name, str) and 0 < len(self.study_name) <= 100
                and self.study_name.isprintable()):
            raise bad("--study-name", self.study_name, "a name of 1 to 100 printable characters")
        if self.storage is not None and self.uses_ladder:
            raise SearchError("--storage: the ladder's promotions are decided by one driver, and "
                              "a shared study has several; use --scheduler asha or none with "
                              "--storage")
        parse_target(self.target)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Settings:
        d = dict(d)
        if "scheduler" not in d and "asha" in d:  # recorded before 0.2: asha on/off, no ladder
            d["scheduler"] = "asha" if d["asha"] else "none"
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def score(self) -> str:
        """The result key the search ranks by."""
        return f"zc_{self.zero_cost_metric}" if self.proxy == "zero-cost" else self.score_by

    @property
    def objective_fn(self) -> Objective:
        sign = 1 if self.proxy == "zero-cost" else TRAINING_SCORES[self.score_by]
        return Objective(self.score, sign, self.objective == "pareto")

    @property
    def band_floor(self) -> int | None:
        """The MACs floor of the band (None: no floor)."""
        if self.macs is None:
            return None
        floor = self.macs_min if self.macs_min is not None else int(FLOPS_MIN_FRACTION * self.macs)
        return floor or None

    @property
    def uses_ladder(self) -> bool:
        """The ladder runs for training proxies under the accuracy objective."""
        return (self.scheduler == "ladder" and self.proxy != "zero-cost"
                and self.objective == "accuracy")

    def uses_asha(self, epochs: int) -> bool:
        """ASHA runs only when asked, for epoch-based proxies with enough epochs, never for the
        Pareto objective (it would prune on accuracy alone and cut the cheap end of the front)."""
        return (self.scheduler == "asha" and self.proxy != "zero-cost"
                and self.objective == "accuracy" and epochs >= ASHA_MIN_EPOCHS)

    def proxy_budget(self, space_name: str | None = None):
        """The :class:`igcv_nas.evaluate.proxy.ProxyBudget` of this search (first rung). With
        ``--proxy both`` and ``space_name``, only the zero-cost proxies that the fidelity
        benchmark found to rank positively in that space are computed beside training
        (:func:`igcv_nas.evaluate.proxy.validated_zero_cost`)."""
        from ..evaluate.proxy import ProxyBudget, default_budget, validated_zero_cost
        if self.budget is not None:
            b = ProxyBudget.from_dict(self.budget)
            b = replace(b, mode=self.proxy)
        else:
            b = default_budget("cuda" if self.gpus_per_trial > 0 else "cpu", self.proxy)
        if self.proxy == "both" and space_name is not None:
            ok = validated_zero_cost(space_name)
            b = replace(b, zero_cost=tuple(z for z in b.zero_cost if z in ok))
            if not b.zero_cost:
                b = replace(b, mode="training")
        if self.proxy == "zero-cost":  # the one metric ranked: the others would only cost time
            b = replace(b, zero_cost=(self.zero_cost_metric,))
        if self.scheduler == "asha" and not b.train.eval_each_epoch:  # ASHA needs epoch scores
            b = replace(b, train=replace(b.train, eval_each_epoch=True))
        return b


def rung_budget(base, factor: int, seed_offset: int):
    """``base`` (a ProxyBudget) with ``factor`` times the training images -- more of the
    training split first, then more epochs (or ``factor`` times the steps when steps are set) --
    and seeds moved by ``1000 * seed_offset`` (0: the search's own seeds, shared by all
    candidates; k > 0: fresh initialisation and data order)."""
    t = base.train
    if t.steps:
        train = replace(t, steps=t.steps * factor)
    else:
        frac = min(1.0, t.train_fraction * factor)
        train = replace(t, train_fraction=frac,
                        epochs=max(1, round(t.epochs * factor * t.train_fraction / frac)))
    return replace(base, train=train).with_seeds(t.seed + 1000 * seed_offset,
                                                 t.data_seed + 1000 * seed_offset)


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
    """``spec`` (as the space samples it) at the resolution and classes budgets are counted at,
    through the one target transform :meth:`NetworkSpec.with_target` (32x32 targets in the
    CIFAR form)."""
    t = parse_target(target)
    if t is None or t == (spec.input_size, spec.num_classes):
        return spec
    return spec.with_target(t[0], t[1], cifar=t[0] == 32)


def extreme_spec(space: SearchSpace, target: str, which: str = "min") -> NetworkSpec:
    """The space's cheapest (``min``) or most expensive (``max``) network by MACs, at ``target``."""
    return at_target(space.sample(optuna.trial.FixedTrial(space.extreme_params(which))), target)


def _macs_at_target(space: SearchSpace, target: str, side: int) -> int:
    """Exact smallest (side 0) or largest (side 1) MACs of the space's networks at ``target``."""
    t = parse_target(target)
    if t is None:
        return space.macs_range()[side][0]
    if t[0] == 32:
        return space.macs_range(cifar=True, num_classes=t[1])[side][0]
    return costmod.count(extreme_spec(space, target, ("min", "max")[side])).macs


def min_macs_at_target(space: SearchSpace, target: str) -> int:
    return _macs_at_target(space, target, 0)


def max_macs_at_target(space: SearchSpace, target: str) -> int:
    return _macs_at_target(space, target, 1)


def min_params_at_target(space: SearchSpace, target: str) -> int:
    """Exact fewest parameters of the space's networks with the target's classes (parameters do
    not depend on the resolution)."""
    t = parse_target(target)
    return space.params_range(num_classes=t[1] if t else None)[0][0]


def check_budgets(settings: Settings, space: SearchSpace) -> Settings:
    """``settings`` checked against what ``space`` holds at the target, before anything runs:
    SearchError when the MACs or params budget is below the space's smallest network or a given
    band floor above its largest; a default floor above the largest follows the space
    (``FLOPS_MIN_FRACTION`` of it). Returns the settings with that floor set."""
    from ..arch.cost import human
    where = f"space {space.name!r} at target {settings.target}"

    def below(flag: str, value: int, floor: int, what: str) -> SearchError:
        return SearchError(f"{flag} {human(value)} ({value:,}) is below the smallest network of "
                           f"{where}: {human(floor)} ({floor:,} {what})")
    if settings.macs is not None:
        floor = min_macs_at_target(space, settings.target)
        if settings.macs < floor:
            raise below("--flops", settings.macs, floor, "MACs")
        band, top = settings.band_floor, max_macs_at_target(space, settings.target)
        if band is not None and band > top:
            if settings.macs_min is not None:
                raise SearchError(f"--flops-min {human(band)} ({band:,} MACs) is above the most "
                                  f"expensive network of {where}: {human(top)} ({top:,} MACs); "
                                  f"lower it or pass --flops-min 0")
            settings = replace(settings, macs_min=int(FLOPS_MIN_FRACTION * top))
    if settings.params is not None:
        floor = min_params_at_target(space, settings.target)
        if settings.params < floor:
            raise below("--params", settings.params, floor, "parameters")
    return settings


def min_latency_at_target(space: SearchSpace, target: str, predictor: Any,
                          method: str = "lut") -> float:
    """A lower bound (exact for the LUT sum) on the latency ``predictor`` predicts for any
    network of ``space`` at ``target``, in ms, as candidates are predicted
    (:func:`igcv_nas.evaluate.latency.min_latency_ms`)."""
    from ..evaluate.latency import min_latency_ms
    t = parse_target(target)
    own = (space.target.input_size, space.target.num_classes)
    if t is None or t == own:
        return min_latency_ms(space, predictor, None, method=method)
    return min_latency_ms(space, predictor, t, cifar=t[0] == 32, method=method)


def check_latency_budget(settings: Settings, space: SearchSpace, predictor: Any) -> None:
    """SearchError when ``settings.latency_ms`` is below the fastest network of ``space`` that
    ``predictor`` predicts (no sample could meet it: without this check the search would draw
    until its cap of rejected samples)."""
    if settings.latency_ms is None or predictor is None:
        return
    method = settings.latency_predictor
    floor = min_latency_at_target(space, settings.target, predictor, method)
    if settings.latency_ms < floor:
        raise SearchError(
            f"--latency {settings.latency_ms:g}ms is below the fastest network of space "
            f"{space.name!r} at target {settings.target}: {floor:.3f} ms predicted "
            f"({method} predictor, device {settings.latency_device}); accepted: at least "
            f"{floor:.3f}ms")


def check_target(space: SearchSpace, target: str) -> None:
    """SearchError when the space's networks are not valid at ``target`` (strides are fixed per
    stage, so one network shows it: e.g. a resolution its strides cannot reach, whose specs
    export would refuse)."""
    if parse_target(target) is None:
        return
    from ..arch.validation import check
    bad = check(extreme_spec(space, target)).violations
    if bad:
        raise SearchError(f"--target {target}: the networks of space {space.name!r} are not valid "
                          f"there ({bad[0].where}: {bad[0].message}); accepted: a resolution "
                          f"its strides reach, such as its own {space.target.input_size}")
