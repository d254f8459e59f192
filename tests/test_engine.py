"""The search engine driven by hand, without Ray or training: what it starts, in which order,
what it records, what it reports (the Ray adapter only relays these calls)."""
from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from igcv_nas.search.runstore import RunDir, load_trials
from igcv_nas.search.engine import FINISHED, Engine
from igcv_nas.search.settings import Settings
from igcv_nas.arch.space import load_space

SMALL = str(Path(__file__).parent / "spaces" / "small.yaml")
TINY_BUDGET = {"mode": "training", "zero_cost": [], "zc_batch": 16, "val_size": 100,
               "dropout": 0.0, "train": {"epochs": 1, "batch_size": 16, "lr": 0.05,
                                         "train_fraction": 0.002, "device": "cpu",
                                         "eval_each_epoch": False}}


def make_engine(tmp_path, **kw) -> Engine:
    space = load_space(SMALL)
    settings = Settings(space=SMALL, macs=4_000_000, trials=4, seed=0, budget=TINY_BUDGET, **kw)
    run = RunDir.create(tmp_path / "run", {"settings": settings.to_dict(), "space": {
        "sha256": space.sha256}, "attempts": []}, space.raw)
    storage = optuna.storages.InMemoryStorage()
    return Engine(run, settings, space, 10, 1, storage, epochs=1)


def result(acc: float, wall: float = 10.0) -> dict:
    return {"final": True, "val_acc": acc, "val_loss": 2.0 - acc, "tse": 30.0 - acc,
            "best_val_acc": acc, "epochs": 1, "train_seconds": wall, "images_per_s": 9.0,
            "wall_seconds": wall, "node": "n0"}


def test_ladder_order_records_and_confirmed_winner(tmp_path):
    eng = make_engine(tmp_path)
    first_scores = [0.30, 0.10, 0.40, 0.20]
    started = []
    for i, acc in enumerate(first_scores):
        cfg = eng.next_config(f"t{i}")
        assert cfg["kind"] == "arch" and cfg["budget"]["train"]["seed"] == 0
        started.append(cfg["number"])
        eng.on_complete(f"t{i}", result(acc))
    # the first rung is complete: the best 2 (ladder_plan(4): keep 2) are promoted at 3x images
    by_number = dict(zip(started, first_scores))
    top2 = sorted(started, key=lambda n: -by_number[n])[:2]
    promo = [eng.next_config("p0"), eng.next_config("p1")]
    assert {c["number"] for c in promo} == set(top2)
    assert all(c["kind"] == "ladder" and c["rung"] == 1 and c["seed"] == 0 for c in promo)
    frac = TINY_BUDGET["train"]["train_fraction"]
    assert promo[0]["budget"]["train"]["train_fraction"] == pytest.approx(3 * frac)
    assert eng.next_config("wait") is None  # confirmations wait for both promotions
    eng.on_complete("p0", result(0.50))
    eng.on_complete("p1", result(0.45))
    # confirmations: both finalists, 2 fresh seeds each (initialisation and data order moved)
    conf = [eng.next_config(f"c{i}") for i in range(4)]
    assert sorted((c["number"], c["seed"]) for c in conf) == sorted(
        (n, s) for n in top2 for s in (1, 2))
    seeds = {(c["budget"]["train"]["seed"], c["budget"]["train"]["data_seed"]) for c in conf}
    assert seeds == {(1000, 1000), (2000, 2000)}
    winner = promo[1]["number"]  # second in rung 1, best in confirmation
    for i, c in enumerate(conf):
        eng.on_complete(f"c{i}", result(0.60 + 0.01 * c["seed"] if c["number"] == winner
                                        else 0.40 + 0.01 * c["seed"]))
    assert eng.next_config("end") == FINISHED
    best = json.loads((eng.run.path / "best.json").read_text())
    w = best["confirmation"]["winner"]
    assert best["confirmed"] and best["number"] == winner == w["number"]
    assert w["runs"] == [pytest.approx(0.61), pytest.approx(0.62)] and w["seeds"] == [1, 2]
    assert best["spec"]["stages"]  # the winner's full spec
    df = load_trials(eng.run.path)
    assert list(df.rung.value_counts().sort_index()) == [len(df[df.rung == 0]), 2, 4]
    assert (df[df.rung > 0].status == "complete").all()
    sm = eng.summary()
    assert (sm.complete, sm.ladder_done, sm.ladder_planned, sm.phase) == (4, 6, 6, "done")
    assert sm.best["confirmed"] and sm.best["val_acc"] == pytest.approx(0.615)


def test_eta_from_mean_training_time_and_concurrency(tmp_path):
    eng = make_engine(tmp_path, scheduler="none")
    a, b = eng.next_config("a"), eng.next_config("b")
    assert eng.summary().eta_s is None  # nothing finished yet
    eng.on_complete("a", result(0.2, wall=12.0))
    # 3 first-rung trainings left, 12 s each, 2 seen running at once
    assert eng.summary().eta_s == pytest.approx(12.0 * 3 / 2)
    eng.on_complete("b", result(0.3, wall=8.0))
    assert eng.summary().eta_s == pytest.approx(10.0 * 2 / 2)
    assert a["kind"] == b["kind"] == "arch"


def test_rejected_samples_never_reach_the_sampler_as_results(tmp_path):
    eng = make_engine(tmp_path, scheduler="none", sampler="random")
    for i in range(4):
        cfg = eng.next_config(f"t{i}")
        assert 2_800_000 <= cfg["macs"] <= 4_000_000  # inside the band [0.7 B, B]
        eng.on_complete(f"t{i}", result(0.1 * i))
    st = eng.book.study
    complete = [t for t in st.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4
    assert all(t.state == optuna.trial.TrialState.FAIL for t in st.trials if t not in complete)
    assert eng.next_config("x") == FINISHED


@pytest.mark.parametrize("sampler", ["nsga2", "evolution"])
def test_genetic_samplers_breed_children_inside_the_band_through_accept(tmp_path, sampler):
    space = load_space(SMALL)
    settings = Settings(space=SMALL, macs=4_000_000, trials=12, seed=3, budget=TINY_BUDGET,
                        scheduler="none", sampler=sampler)
    run = RunDir.create(tmp_path / "run", {"settings": settings.to_dict(), "space": {
        "sha256": space.sha256}, "attempts": []}, space.raw)
    eng = Engine(run, settings, space, 10, 1, optuna.storages.InMemoryStorage(), epochs=1)
    numbers = []
    for i in range(12):
        cfg = eng.next_config(f"t{i}")
        assert 2_800_000 <= cfg["macs"] <= 4_000_000
        numbers.append(cfg["number"])
        eng.on_complete(f"t{i}", result(0.1 + 0.03 * (i % 5)))
    assert eng.next_config("x") == FINISHED
    df = load_trials(run.path)
    ev = df[df.status == "complete"]
    assert len(ev) == 12 and ev.arch_id.is_unique
    children = ev[ev.parent.notna()]
    # population max(6 (nsga2) / 4 (evolution), 12 // 3): random first generation, then children
    first = 6 if sampler == "nsga2" else 4
    assert len(children) == 12 - first
    assert set(children.parent.astype(int)) <= set(numbers)
    assert len(df) == 12  # accept kept every sample (random ones too) inside the band and new


def test_restarted_engine_continues_only_trials_with_both_spec_files(tmp_path):
    """A driver that died between writing a sample's spec.json and its proxy_spec.json (before
    the training was handed to Ray) left a sample that cannot be trained: a restarted engine
    marks it lost and samples a new architecture in its place; a sample with both files is
    handed out again under its own number."""
    space = load_space(SMALL)
    settings = Settings(space=SMALL, macs=4_000_000, trials=3, seed=0, budget=TINY_BUDGET,
                        scheduler="none")
    run = RunDir.create(tmp_path / "run", {"settings": settings.to_dict(), "space": {
        "sha256": space.sha256}, "attempts": []}, space.raw)
    storage = optuna.storages.InMemoryStorage()
    eng = Engine(run, settings, space, 10, 1, storage, epochs=1)
    a, b = eng.next_config("a"), eng.next_config("b")
    run.proxy_spec_file(b["number"]).unlink()  # the crash came between the two writes
    again = Engine(run, settings, space, 10, 2, storage, epochs=1)
    first = again.next_config("a2")
    assert first["number"] == a["number"] and first["spec"] == a["spec"]
    lost = again.book.study.trials[b["number"]]
    assert lost.state == optuna.trial.TrialState.FAIL and lost.user_attrs["status"] == "lost"
    fresh = again.next_config("c2")
    assert fresh["kind"] == "arch" and fresh["number"] > b["number"]
    assert run.proxy_spec_file(fresh["number"]).is_file()


def test_extreme_macs_at_targets():
    from igcv_nas.arch import cost
    from igcv_nas.search.settings import extreme_spec, max_macs_at_target, min_macs_at_target
    sp = load_space("igcv3")
    assert min_macs_at_target(sp, "space") == sp.min_macs()
    assert max_macs_at_target(sp, "space") == sp.max_macs()
    lo, hi = sp.macs_range(cifar=True, num_classes=10)
    assert (min_macs_at_target(sp, "cifar10"), max_macs_at_target(sp, "cifar10")) == (lo[0], hi[0])
    big = extreme_spec(sp, "160:1000", "max")
    assert big.input_size == 160 and max_macs_at_target(sp, "160:1000") == cost.count(big).macs


def test_samplers_draw_from_independent_streams():
    """TPE's random start-up with search seed s is not random search's first draws with seed s
    (it was: the first 8 of a TPE search were random search's first 8)."""
    import optuna

    from igcv_nas.search.engine import make_sampler, sampler_seed
    from igcv_nas.search.settings import Settings

    def first(sampler: str, seed: int) -> list[int]:
        study = optuna.create_study(sampler=make_sampler(Settings(sampler=sampler, trials=24),
                                                         seed))
        out = []
        for _ in range(8):
            t = study.ask()
            out.append(t.suggest_int("x", 0, 10**6))
            study.tell(t, 0.0)
        return out
    for seed in (0, 1, 7):
        assert first("tpe", seed) != first("random", seed)
        assert first("random", seed) == first("random", seed)  # still reproducible
    assert sampler_seed(0, "tpe") != sampler_seed(0, "random")
    assert all(0 <= sampler_seed(s, "tpe") < 2**32 for s in (0, 2**31 - 1))
