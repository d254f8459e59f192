"""The trial book and the ladder on Optuna's in-memory storage: no Ray, no training, seconds."""
from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from igcv_nas.search.trials import (EVALUATED, Ladder, Objective, Rung, TrialBook, TrialStatus,
                                    ladder_cost, ladder_plan, status_of)

optuna.logging.set_verbosity(optuna.logging.WARNING)
CHOICES = list(range(12))


def propose(trial):
    """An 'architecture' is one categorical choice; its MACs are 10 x the choice."""
    x = trial.suggest_categorical("x", CHOICES)
    return {"arch_id": f"a{x}", "macs": 10 * x, "params": x}, x


def budget(limit=80, floor=20):
    def judge(attrs):
        if attrs["macs"] > limit:
            return TrialStatus.OVER_BUDGET, "over"
        if attrs["macs"] < floor:
            return TrialStatus.BELOW_BAND, "below"
        return None
    return judge


def new_book(sampler=None, objective=None, storage=None):
    study = optuna.create_study(sampler=sampler or optuna.samplers.RandomSampler(seed=0),
                                direction="maximize", storage=storage, study_name="s",
                                load_if_exists=True)
    return TrialBook(study, objective or Objective())


def test_rejected_samples_are_fail_never_complete():
    book = new_book()
    seen = []
    for _ in range(7):  # the band holds exactly 7 architectures (MACs 20..80)
        p = book.ask(propose, budget(), 100)
        assert p is not None and 20 <= p.attrs["macs"] <= 80
        assert p.attrs["arch_id"] not in seen  # never a duplicate handed out
        seen.append(p.attrs["arch_id"])
        book.complete(p.number, {"val_acc": p.payload / 100}, p.attrs["macs"])
    states = {status_of(t): set() for t in book.trials()}
    for t in book.trials():
        states[status_of(t)].add(t.state)
    assert states[TrialStatus.COMPLETE] == {TrialState.COMPLETE}
    for st in (TrialStatus.OVER_BUDGET, TrialStatus.BELOW_BAND, TrialStatus.DUPLICATE):
        assert states.get(st, {TrialState.FAIL}) == {TrialState.FAIL}
    assert book.ask(propose, budget(), 100) is None  # the band is exhausted
    # exactly the 7 evaluated architectures are COMPLETE: what a sampler learns from
    complete = [t for t in book.trials() if t.state == TrialState.COMPLETE]
    assert len(complete) == book.evaluated_count() == 7
    assert sorted(t.value for t in complete) == sorted(int(a[1:]) / 100 for a in seen)
    assert {t.user_attrs["arch_id"] for t in complete} == set(seen)
    # duplicates name their original and show its scores in the table
    rows = {r["number"]: r for r in book.rows()}
    for t in book.trials():
        if status_of(t) == TrialStatus.DUPLICATE:
            orig = rows[t.user_attrs["duplicate_of"]]
            assert rows[t.number]["arch_id"] == orig["arch_id"]
            assert rows[t.number]["val_acc"] == orig["val_acc"]


def test_samplers_see_only_evaluated_architectures():
    """With multivariate TPE: however many samples are rejected in between, the study's COMPLETE
    trials are exactly the evaluated architectures (TPE's start-up and its good/bad split count
    COMPLETE and PRUNED trials only); when the band is exhausted ask() says so instead of
    re-telling an old result."""
    sampler = optuna.samplers.TPESampler(seed=1, n_startup_trials=4, multivariate=True, group=True)
    book = new_book(sampler)
    for _ in range(5):
        p = book.ask(propose, budget(limit=100, floor=30), 300)
        book.complete(p.number, {"val_acc": p.payload / 100}, p.attrs["macs"])
    complete = [t for t in book.trials() if t.state == TrialState.COMPLETE]
    assert len(complete) == book.evaluated_count() == 5
    assert len(book.trials()) > 5  # rejections happened, as FAIL
    assert all(t.state == TrialState.FAIL for t in book.trials() if t not in complete)
    # only three architectures fit the band 30..50: then the draws end in duplicates or
    # rejections and ask() reports exhaustion
    book2 = new_book()
    got = [book2.ask(propose, budget(limit=50, floor=30), 300) for _ in range(4)]
    assert [g is None for g in got] == [False, False, False, True]
    assert book2.evaluated_count() == 0 and book2.count(TrialStatus.EVALUATING) == 3


def test_prune_fail_and_recover():
    storage = optuna.storages.InMemoryStorage()
    book = new_book(storage=storage)
    a, b, c, d = (book.ask(propose, budget(limit=200, floor=0), 100) for _ in range(4))
    book.complete(a.number, {"val_acc": 0.5}, a.attrs["macs"])
    book.report(b.number, 0.2, 1)
    book.prune(b.number, "asha", {"val_acc": 0.2, "epochs": 1.0})
    book.fail(c.number, "NonFiniteLoss")
    # d is left evaluating, and one more trial is asked but never decided (driver died)
    lost = book.study.ask()
    assert book.evaluated_count() == 3
    again = new_book(storage=storage).recover(lambda n: n == d.number)
    assert [p.number for p in again] == [d.number]
    book2 = new_book(storage=storage)
    assert status_of(book2.trials()[lost.number]) == TrialStatus.LOST
    assert book2.trials()[lost.number].state == TrialState.FAIL
    assert {status_of(t) for t in book2.trials()} >= set(EVALUATED)
    assert book2.trials()[b.number].state == TrialState.PRUNED
    assert book2.trials()[b.number].user_attrs["reason"] == "asha"


def test_objective_signs_and_pareto_values():
    assert Objective("val_loss", -1).values({"val_loss": 2.5}, 100) == -2.5
    assert Objective("val_acc", 1, pareto=True).values({"val_acc": 0.3}, 100) == [0.3, 100.0]
    assert Objective("tse", -1).of_row({"tse": 10.0}) == -10.0
    assert Objective().of_row({"val_acc": float("nan")}) is None


def test_ladder_plan_and_cost():
    plan = ladder_plan(20)
    assert plan == (Rung("promote", 5, 3, (0,)), Rung("confirm", 3, 3, (1, 2)))
    assert ladder_cost(20, plan) == 20 + 5 * 3 + 3 * 3 * 2
    assert ladder_plan(6) == (Rung("promote", 2, 3, (0,)), Rung("confirm", 2, 3, (1, 2)))


def _run_ladder(storage, book, plan, scores_by_rung):
    """Drive the ladder to the end: every training's score from scores_by_rung[rung][source]."""
    lad = Ladder(optuna.create_study(storage=storage, study_name="lad", direction="maximize",
                                     load_if_exists=True), book, plan)
    while True:
        jobs = lad.next_jobs(True)
        if not jobs:
            return lad
        for source, rung, seed in jobs:
            job = lad.start(source, rung, seed, {"arch_id": f"a{source}", "macs": 10})
            lad.complete(job.number, {"val_acc": scores_by_rung[rung][source] + 0.001 * seed})


def test_ladder_promotes_the_best_and_confirms_with_fresh_seeds():
    storage = optuna.storages.InMemoryStorage()
    book = new_book(storage=storage)
    first = {}
    for i in range(8):
        p = book.ask(propose, budget(limit=200, floor=0), 100)
        first[p.number] = [0.30, 0.10, 0.25, 0.50, 0.20, 0.45, 0.05, 0.40][i]
        book.complete(p.number, {"val_acc": first[p.number]}, p.attrs["macs"])
    plan = (Rung("promote", 3, 3, (0,)), Rung("confirm", 2, 3, (1, 2)))
    top3 = sorted(first, key=lambda n: -first[n])[:3]
    # rung 1 reorders the top three; the confirmation picks rung 1's top two
    rung1 = {n: v for n, v in zip(top3, (0.2, 0.6, 0.5))}
    rung2 = {top3[1]: 0.55, top3[2]: 0.58}
    lad = _run_ladder(storage, book, plan, {1: rung1, 2: rung2})
    runs = [(t.user_attrs["source"], t.user_attrs["rung"], t.user_attrs["seed"])
            for t in lad.trials()]
    assert sorted(r for r in runs if r[1] == 1) == sorted((n, 1, 0) for n in top3)
    assert sorted(r for r in runs if r[1] == 2) == sorted(
        (n, 2, s) for n in (top3[1], top3[2]) for s in (1, 2))
    conf = lad.confirmed()
    w = conf["winner"]
    assert w["number"] == top3[2] and w["seeds"] == [1, 2] and w["complete"]
    assert w["runs"] == [pytest.approx(0.581), pytest.approx(0.582)]
    assert w["mean"] == pytest.approx(0.5815) and w["std"] == pytest.approx(0.000707, abs=1e-6)
    assert lad.finished() == lad.planned() == 3 + 4
    rows = lad.rows()
    assert {(r["number"], r["rung"], r["seed"]) for r in rows} == set(runs)


def test_ladder_waits_for_the_rung_below_and_resumes():
    storage = optuna.storages.InMemoryStorage()
    book = new_book(storage=storage)
    for v in (0.1, 0.2, 0.3):
        p = book.ask(propose, budget(limit=200, floor=0), 100)
        book.complete(p.number, {"val_acc": v}, p.attrs["macs"])
    plan = (Rung("promote", 2, 3, (0,)), Rung("confirm", 1, 3, (1, 2)))
    lstudy = optuna.create_study(storage=storage, study_name="lad", direction="maximize")
    lad = Ladder(lstudy, book, plan)
    assert lad.next_jobs(False) == []  # the first rung is not done
    jobs = lad.next_jobs(True)
    assert len(jobs) == 2 and {j[1] for j in jobs} == {1}
    j0 = lad.start(*jobs[0], {"arch_id": "x", "macs": 1})
    lad.start(*jobs[1], {"arch_id": "y", "macs": 1})
    lad.complete(j0.number, {"val_acc": 0.9})
    assert lad.next_jobs(True) == []  # one promotion still running: confirmations wait
    # the driver dies here; a new one re-issues the running promotion
    lad2 = Ladder(optuna.load_study(storage=storage, study_name="lad"), book, plan)
    again = lad2.recover(lambda n: True)
    assert [(j.source, j.rung, j.seed) for j in again] == [jobs[1]]
    lad2.complete(again[0].number, {"val_acc": 0.4})
    nxt = lad2.next_jobs(True)
    assert nxt == [(jobs[0][0], 2, 1), (jobs[0][0], 2, 2)]
    assert lad2.confirmed() is None


# -- a shared study: two drivers' books over one RDB study (SQLite here; PostgreSQL in
# test_shared_study.py) ---------------------------------------------------------------------

def shared_books(tmp_path, *drivers):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = optuna.storages.RDBStorage(url)
    books = []
    for i, d in enumerate(drivers):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=i), storage=storage,
                                    study_name="shared", direction="maximize", load_if_exists=True)
        books.append(TrialBook(study, Objective(), driver=d, shared=True))
    return books


def fixed(x):
    """A proposal of architecture ``x`` whatever the sampler says."""
    def propose(trial):
        trial.suggest_categorical("x", CHOICES)
        return {"arch_id": f"a{x}", "macs": 10 * x, "params": x}, x
    return propose


def test_a_shared_study_gives_an_architecture_to_one_driver_only(tmp_path):
    a, b = shared_books(tmp_path, "drv-a", "drv-b")
    pa = a.ask(fixed(3), budget(), 5)
    assert pa is not None and pa.number == 0
    # b's draw finds a3 held by a's trial
    assert b.ask(fixed(3), budget(), 1) is None
    t = b.trials()[1]
    assert status_of(t) == TrialStatus.DUPLICATE and t.user_attrs["duplicate_of"] == 0
    assert t.user_attrs["driver"] == "drv-b"
    assert t.user_attrs["reason"] == "same architecture as trial 0 (of driver drv-a)"
    pb = b.ask(fixed(4), budget(), 1)
    assert pb is not None and pb.number == 2
    assert a.committed_count() == b.committed_count() == 2  # both evaluating, seen by both


def test_a_shared_study_counts_trials_over_every_driver(tmp_path):
    a, b = shared_books(tmp_path, "drv-a", "drv-b")
    for x in (2, 3):
        p = a.ask(fixed(x), budget(), 1, limit=3)
        a.complete(p.number, {"val_acc": 0.1 * x}, 10 * x)
    p = b.ask(fixed(5), budget(), 1, limit=3)
    assert p is not None  # the third of three
    assert a.ask(fixed(6), budget(), 5, limit=3) is None  # the study's three are taken
    t = a.trials()[-1]
    assert status_of(t) == TrialStatus.SURPLUS and t.state == TrialState.FAIL
    assert t.user_attrs["reason"] == "the study's 3 trials were taken by other drivers first"
    assert a.evaluated_count() == 2 and a.committed_count() == 3


def test_a_driver_waits_for_a_lower_trial_another_driver_is_still_proposing(tmp_path):
    """Driver a asked trial 0 and has not decided it when b settles trial 1 on the same
    architecture: b waits for a's decision, then yields to it."""
    import threading
    a, b = shared_books(tmp_path, "drv-a", "drv-b")
    tr = a.study.ask()
    tr.set_user_attr("driver", "drv-a")
    tr.set_user_attr("arch_id", "a4")
    out = {}
    th = threading.Thread(target=lambda: out.setdefault("b", b.ask(fixed(4), budget(), 1)))
    th.start()
    th.join(0.5)
    assert th.is_alive()  # b waits: trial 0 is undecided
    tr.set_user_attr("status", TrialStatus.EVALUATING.value)
    th.join(15)
    assert not th.is_alive() and out["b"] is None
    assert b.trials()[1].user_attrs["duplicate_of"] == 0


def test_recover_leaves_another_drivers_running_trials_alone(tmp_path):
    a, b = shared_books(tmp_path, "drv-a", "drv-b")
    pa, pb = a.ask(fixed(2), budget(), 1), b.ask(fixed(3), budget(), 1)
    again = a.recover(lambda n: False)  # a restarted: its trial cannot continue, b's is b's
    assert again == []
    assert status_of(a.trials()[pa.number]) == TrialStatus.LOST
    assert status_of(a.trials()[pb.number]) == TrialStatus.EVALUATING
    assert a.trials()[pb.number].state == TrialState.RUNNING


def test_drawing_has_a_time_bound_and_a_voice():
    """A budget nothing meets: the draws stop at the deadline (the caller gets control back)
    and report their count while they go on."""
    book = new_book()
    heard = []
    assert book.ask(propose, budget(limit=-1), 10_000, deadline_s=0.2, on_draws=heard.append,
                    voice_s=0.0) is None
    assert book.last_stop == "time" and 1 <= book.last_draws < 10_000
    assert heard == list(range(1, book.last_draws))  # every draw after the first, voice_s 0
    assert len(book.trials()) == book.last_draws
    assert book.count(TrialStatus.OVER_BUDGET) == book.last_draws  # all rejected, none trained
    assert book.ask(propose, budget(limit=-1), 5) is None and book.last_stop == "draws"
    assert book.last_draws == 5
    p = book.ask(propose, budget(), 100)
    assert p is not None and book.last_stop == "found"


def test_batched_journal_writes_a_proposal_as_one_append_that_reads_back_the_same(tmp_path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from igcv_nas.search.compat import BatchedJournalStorage, batched_writes
    path = tmp_path / "study.journal"
    study = optuna.create_study(storage=BatchedJournalStorage(JournalFileBackend(str(path))),
                                study_name="s", sampler=optuna.samplers.RandomSampler(seed=0))
    before = path.read_bytes()
    with batched_writes(study):
        t = study.ask()
        xs = [t.suggest_int(f"x{i}", 0, 9) for i in range(5)]
        t.set_user_attr("arch_id", "a1")
        study.tell(t, 0.5)
        assert path.read_bytes() == before  # held
        seen = study.get_trials(deepcopy=False)[0]  # reads see what is held
        assert seen.params == {f"x{i}": x for i, x in enumerate(xs)} and seen.value == 0.5
    written = path.read_bytes()[len(before):].decode().splitlines()
    assert len(written) == 1 + 5 + 1 + 1  # create, 5 params, 1 attribute, tell: one append
    again = optuna.load_study(study_name="s",
                              storage=JournalStorage(JournalFileBackend(str(path))))
    (t2,) = again.trials
    assert t2.params == seen.params and t2.user_attrs == {"arch_id": "a1"} and t2.value == 0.5
    t3 = study.ask()  # outside a hold: written at once
    t3.set_user_attr("k", 2)
    assert len(path.read_bytes().decode().splitlines()) == len(before.decode().splitlines()) + 10
