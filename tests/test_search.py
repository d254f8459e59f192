"""igcv-search end to end: real Ray (local), real Optuna journal storage, real CIFAR-10 copy.

Tiny proxy budgets and the small test spaces under tests/spaces keep each search to seconds;
the 2-node cluster run is in tests/test_search_cluster.py (slow)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from igcv_nas.arch import cost
from igcv_nas.cli.search import main
from igcv_nas.search.runstore import STUDY_NAME, RunDir, load_trials
from igcv_nas.arch.space import load_space, to_cifar
from igcv_nas.arch.spec import load

pytestmark = pytest.mark.integration

SPACES = Path(__file__).parent / "spaces"
SMALL, TINY = str(SPACES / "small.yaml"), str(SPACES / "tiny.yaml")
FAST = ["--epochs", "3", "--train-fraction", "0.002", "--batch-size", "16", "--val-size", "100",
        "--cpus-per-trial", "1", "--quiet"]


def study(run_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY_NAME,
                             storage=JournalStorage(
                                 JournalFileBackend(str(run_dir / "study.journal"))))


def evaluated(df: pd.DataFrame) -> pd.DataFrame:
    """Architectures evaluated at the first rung (ladder rows have rung >= 1)."""
    return df[df.status.isin(["complete", "pruned", "failed"]) & (df.rung == 0)]


@pytest.fixture(scope="module")
def local_ray():
    yield
    import ray
    ray.shutdown()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, cifar_dir, local_ray):
    """6 trials of the small space under 3M MACs, one at a time (so ASHA's decisions are
    deterministic), multivariate TPE, ASHA instead of the ladder."""
    d = tmp_path_factory.mktemp("search") / "run"
    rc = main(["--space", SMALL, "--flops", "3M", "--trials", "6", "--seed", "1",
               "--max-concurrent", "1", "--scheduler", "asha", "--data-dir", str(cifar_dir),
               "--run-dir", str(d), *FAST])
    assert rc == 0
    return d


def test_run_json_records_the_search(small_run):
    meta = json.loads((small_run / "run.json").read_text())
    assert meta["format"] == "igcv-nas/run@1"
    assert meta["status"] == "finished"
    s = meta["settings"]
    assert (s["macs"], s["trials"], s["sampler"], s["seed"], s["target"]) == (
        3_000_000, 6, "tpe", 1, "space")
    assert s["budget"]["train"]["epochs"] == 3 and s["budget"]["val_size"] == 100
    sp = load_space(SMALL)
    assert meta["space"]["sha256"] == sp.sha256
    assert (small_run / "space.yaml").read_bytes() == Path(SMALL).read_bytes()
    assert set(meta["versions"]) >= {"torch", "optuna", "ray", "igcv_nas", "python"}
    assert meta["data"] == {"dataset": "cifar10", "train": 45000, "val": 5000,
                            "test_held_out": 10000, "classes": 10}
    assert len(meta["attempts"]) == 1 and meta["elapsed_s"] > 0
    assert (small_run / "ray" / "attempt-1").is_dir()  # Ray's experiment state


def test_trials_are_in_budget_unique_and_counted_exactly(small_run):
    df = load_trials(small_run)
    ev = evaluated(df)
    assert len(ev) == 6
    assert ev.arch_id.is_unique
    assert (ev.macs <= 3_000_000).all()
    for _, r in ev.iterrows():
        spec = load(RunDir(small_run).spec_file(int(r.number)))
        c = cost.count(spec)
        assert (spec.arch_id, c.macs, c.params) == (r.arch_id, r.macs, r.params)
        proxy = load(RunDir(small_run).trial_dir(int(r.number)) / "proxy_spec.json")
        assert proxy == to_cifar(spec, 10, 32)
        assert proxy.stem.stride == 1 and proxy.num_classes == 10
        # checkpoints live in the Tune storage and are deleted once the trial is decided
        assert not list((small_run / "ray").glob(f"attempt-*/trial-{r.number}/checkpoint_*"))
    assert (ev.macs >= 2_100_000).all()  # the default band floor: 0.7 x --flops
    over = df[df.status == "over-budget"]
    assert len(over) > 0 and (over.macs > 3_000_000).all()
    below = df[df.status == "below-band"]
    assert (below.macs < 2_100_000).all()
    for n in list(over.number) + list(below.number):  # never trained: no trial files
        assert not RunDir(small_run).trial_dir(int(n)).exists()


def test_study_states_match_the_table(small_run):
    st = study(small_run)
    df = load_trials(small_run).set_index("number")
    assert not [t for t in st.trials if t.state == optuna.trial.TrialState.RUNNING]
    for t in st.trials:
        status = df.loc[t.number, "status"]
        # only evaluated architectures reach the sampler as results: rejected samples are FAIL
        expect = {"complete": "COMPLETE", "over-budget": "FAIL", "below-band": "FAIL",
                  "pruned": "PRUNED", "failed": "FAIL", "lost": "FAIL", "duplicate": "FAIL"}[status]
        assert t.state.name == expect
        if status == "complete":
            assert t.value == pytest.approx(df.loc[t.number, "val_acc"])
    assert sum(t.state.name == "COMPLETE" for t in st.trials) == (df.status == "complete").sum()


def test_asha_stops_are_pruned_not_complete(small_run):
    df = load_trials(small_run)
    ev = evaluated(df)
    pruned, done = ev[ev.status == "pruned"], ev[ev.status == "complete"]
    assert len(pruned) >= 1, "ASHA pruned nothing in 6 sequential trials"
    assert (pruned.reason == "asha").all() and (pruned.epochs < 3).all()
    assert (done.epochs == 3).all()
    st = study(small_run)
    for n in pruned.number:
        t = st.trials[int(n)]
        assert t.state == optuna.trial.TrialState.PRUNED
        # the low-fidelity score is kept as a report (Optuna shows the last one as its value)
        last = t.intermediate_values[max(t.intermediate_values)]
        assert t.value == last == pytest.approx(df.set_index("number").loc[n, "val_acc"])


def test_best_and_pareto_files(small_run):
    df = load_trials(small_run)
    done = df[df.status == "complete"]
    best = json.loads((small_run / "best.json").read_text())
    top = done.sort_values(["val_acc", "macs"], ascending=[False, True]).iloc[0]
    assert best["number"] == top.number and best["val_acc"] == pytest.approx(top.val_acc)
    spec = load(RunDir(small_run).spec_file(best["number"]))
    assert best["spec"] == json.loads(spec.to_json())
    pareto = json.loads((small_run / "pareto.json").read_text())
    assert best["number"] in [p["number"] for p in pareto]
    for p in pareto:  # nothing complete is both cheaper-or-equal and strictly better
        dom = done[(done.macs <= p["macs"]) & (done.val_acc > p["val_acc"])]
        assert dom.empty


def test_second_search_on_a_run_dir_is_refused_while_locked(small_run, capsys):
    holder = RunDir(small_run)
    holder.lock()
    try:
        before = (small_run / "run.json").read_bytes()
        assert main(["--resume", str(small_run), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert "is in use by pid" in err and len(err.splitlines()) == 1
        assert (small_run / "run.json").read_bytes() == before
    finally:
        holder.unlock()


def test_resume_with_changed_budget_or_space_is_refused(small_run, capsys):
    before = {p: p.read_bytes() for p in (small_run / "run.json", small_run / "study.journal")}
    assert main(["--resume", str(small_run), "--flops", "4M"]) == 2
    assert "macs was 3000000, now 4000000" in capsys.readouterr().err
    assert main(["--resume", str(small_run), "--space", TINY]) == 2
    assert "differs from the space of" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in before} == before


def test_resume_of_a_finished_search_with_more_trials(small_run, cifar_dir):
    df0 = load_trials(small_run)
    rc = main(["--resume", str(small_run), "--trials", "7", "--data-dir", str(cifar_dir),
               "--quiet"])
    assert rc == 0
    df = load_trials(small_run)
    assert len(evaluated(df)) == 7 and evaluated(df).arch_id.is_unique
    old = df[df.number.isin(evaluated(df0).number)]
    pd.testing.assert_frame_equal(old[["number", "status", "arch_id", "val_acc", "finished"]]
                                  .reset_index(drop=True),
                                  evaluated(df0)[["number", "status", "arch_id", "val_acc",
                                                  "finished"]]
                                  .reset_index(drop=True))
    new = evaluated(df)[~evaluated(df).number.isin(df0.number)]
    assert (new.attempt == 2).all()
    meta = json.loads((small_run / "run.json").read_text())
    assert len(meta["attempts"]) == 2 and meta["settings"]["trials"] == 7


def test_duplicates_are_never_trained_twice(tmp_path, cifar_dir, local_ray):
    """The tiny space has exactly 4 architectures: 4 trials evaluate each once; the random
    sampler draws repeats on the way, which are told the earlier outcome."""
    d = tmp_path / "run"
    rc = main(["--space", TINY, "--trials", "4", "--sampler", "random", "--seed", "0",
               "--data-dir", str(cifar_dir), "--run-dir", str(d), "--no-asha", *FAST])
    assert rc == 0
    df = load_trials(d)
    ev = evaluated(df)
    assert len(ev) == 4 and ev.arch_id.nunique() == 4
    dups = df[df.status == "duplicate"]
    assert len(dups) >= 1
    st = study(d)
    for _, r in dups.iterrows():
        orig = df[df.number == r.duplicate_of].iloc[0]
        assert orig.arch_id == r.arch_id and orig.status in ("complete", "pruned", "failed")
        # never told to the sampler as a new result; the table shows the original's score
        assert st.trials[int(r.number)].state == optuna.trial.TrialState.FAIL
        assert r.val_acc == orig.val_acc or (pd.isna(r.val_acc) and pd.isna(orig.val_acc))
        assert not RunDir(d).trial_dir(int(r.number)).exists()


def test_pareto_objective_with_nsga2(tmp_path, cifar_dir, local_ray):
    d = tmp_path / "run"
    rc = main(["--space", SMALL, "--flops", "4M", "--trials", "3", "--objective", "pareto",
               "--sampler", "nsga2", "--data-dir", str(cifar_dir), "--run-dir", str(d),
               "--no-asha", *FAST])
    assert rc == 0
    st = study(d)
    assert [x.name for x in st.directions] == ["MAXIMIZE", "MINIMIZE"]
    df = load_trials(d).set_index("number")
    done = [t for t in st.trials if df.loc[t.number, "status"] == "complete"]
    assert len(done) == 3
    for t in done:
        assert t.values == [pytest.approx(df.loc[t.number, "val_acc"]), df.loc[t.number, "macs"]]


def test_time_budget_stops_the_search(tmp_path, cifar_dir, local_ray):
    d = tmp_path / "run"
    t0 = time.time()
    rc = main(["--space", SMALL, "--flops", "4M", "--trials", "100", "--time-budget", "12s",
               "--data-dir", str(cifar_dir), "--run-dir", str(d), "--no-asha", *FAST])
    assert rc == 0
    assert time.time() - t0 < 180  # stopped by the budget: 100 trials take far longer
    meta = json.loads((d / "run.json").read_text())
    assert meta["status"] == "stopped"
    df = load_trials(d)
    assert 0 < len(evaluated(df)) < 100
    assert not [t for t in study(d).trials if t.state == optuna.trial.TrialState.RUNNING]
    stopped = df[df.status == "pruned"]
    assert (stopped.reason == "time-budget").all()


def wait_for_table(run_dir: Path, ready, timeout: float) -> pd.DataFrame:
    """Poll a running search's trials.csv until ``ready(df)`` (or the timeout); the last table."""
    deadline, df = time.time() + timeout, pd.DataFrame({"status": []})
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            df = pd.read_csv(run_dir / "trials.csv")
        except (OSError, pd.errors.EmptyDataError):
            continue
        if ready(df):
            break
    return df


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "igcv_nas.cli.search", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_resume_after_kill_9_of_the_driver(tmp_path, cifar_dir):
    """kill -9 after >= 2 of 6 trials completed; --resume ends with exactly 6 evaluated
    architectures, the earlier records unchanged, none trained twice, nothing RUNNING."""
    d = tmp_path / "run"
    args = ["--space", SMALL, "--flops", "4M", "--trials", "6", "--seed", "5", "--no-asha",
            "--data-dir", str(cifar_dir), *FAST]
    p = _cli(*args, "--run-dir", str(d))
    df = wait_for_table(d, lambda df: (df.status == "complete").sum() >= 2, timeout=900)
    done0 = df[df.status == "complete"]
    os.kill(p.pid, signal.SIGKILL)
    p.communicate()
    assert len(done0) >= 2, "no 2 trials completed within the deadline"
    assert (d / ".lock").read_text().startswith("pid ")  # left behind by the killed driver
    snap = pd.read_csv(d / "trials.csv")
    before = snap[snap.status == "complete"]
    interrupted = snap[snap.status == "running"]

    r = _cli("--resume", str(d), "--data-dir", str(cifar_dir), "--quiet")
    out, err = r.communicate(timeout=300)
    assert r.returncode == 0, err[-2000:]
    df = load_trials(d)
    ev = evaluated(df)
    assert len(ev) == 6 and ev.arch_id.is_unique
    kept = df.set_index("number").loc[before.number]
    assert list(kept.arch_id) == list(before.arch_id)
    assert list(kept.val_acc) == pytest.approx(list(before.val_acc))
    assert list(kept.finished) == list(pd.to_datetime(before.finished))  # typed by load_trials
    assert not [t for t in study(d).trials if t.state == optuna.trial.TrialState.RUNNING]
    for n in interrupted.number:  # continued (from its checkpoint when one was written)
        row = df.set_index("number").loc[n]
        assert row.status == "complete"
    meta = json.loads((d / "run.json").read_text())
    assert meta["status"] == "finished" and len(meta["attempts"]) == 2


BAD = [
    (["--flops", "abc"], "--flops 'abc'"),
    (["--flops=-5M"], "--flops '-5M'"),
    (["--flops", "-5M"], "argument --flops: expected one argument"),
    (["--flops", "0"], "--flops '0'"),
    (["--flops", "1e400"], "--flops '1e400'"),
    (["--flops", "300X"], "--flops '300X'"),
    (["--flops", "10M"], "--flops 10.00M (10,000,000) is below the smallest network of space "
                         "'igcv3' at target space: 62.41M (62,407,696 MACs)"),
    (["--space", "nosuch"], "nosuch"),
    (["--target", "foo"], "--target 'foo'"),
    (["--trials", "0"], "--trials 0"),
    (["--sampler", "grid"], "invalid choice: 'grid'"),
    (["--epochs", "0"], "epochs=0"),
    (["--flops", "300M", "--flops-min", "400M"], "--flops-min 400000000"),
    (["--flops", "300M", "--flops-min", "abc"], "--flops-min 'abc'"),
    (["--flops", "5G", "--flops-min", "4G"], "above the most expensive network"),
    (["--scheduler", "hyperband"], "invalid choice: 'hyperband'"),
    (["--latency", "15"], "--latency '15' has no unit; accepted: a duration with its unit"),
    (["--seed", "-1"], "--seed -1; accepted: an integer from 0 to 2,147,483,647"),
    (["--seed", str(2**40)], "--seed 1099511627776"),
    (["--lr", "nan"], "lr=nan must be a finite number >= 0"),
    (["--steps", "-3"], "steps=-3 must be >= 1"),
    (["--gpus-per-trial", "1"], "--gpus-per-trial 1; this machine has 0 CUDA GPUs"),
    (["--cpus-per-trial", "999"], "--cpus-per-trial 999; this machine has"),
    (["--address", "127.0.0.1:1"], "--address 127.0.0.1:1: no Ray head answers there"),
    (["--params", "1M"], "--params 1.00M (1,000,000) is below the smallest network of space "
                         "'igcv3' at target space: 1.79M (1,788,800 parameters)"),
    (["--target", "8:10"], "--target 8:10: the networks of space 'igcv3' are not valid there"),
    (["--sampler", "evolution", "--objective", "pareto"],
     "--sampler evolution is single-objective"),
    (["--dataset", "/nonexistent/folder"], "/nonexistent/folder"),
]


@pytest.mark.parametrize("argv,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_one_line_exit_2_nothing_written(argv, needle, tmp_path, capsys):
    d = tmp_path / "run"
    try:
        rc = main([*argv, "--run-dir", str(d), "--data-dir", str(tmp_path / "nodata")])
    except SystemExit as e:  # argparse's own errors (one line too, via OneLineParser)
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("igcv-search: error: ")
    assert needle in err
    assert not d.exists() and list(tmp_path.iterdir()) == []


def test_bad_input_is_fast_and_resume_of_a_non_run_is_refused(tmp_path):
    t0 = time.time()
    p = _cli("--resume", str(tmp_path))
    out, err = p.communicate(timeout=300)
    assert p.returncode == 2 and time.time() - t0 < 30  # a hang guard
    assert err.strip() == (f"igcv-search: error: {tmp_path} is not an igcv-search run "
                           f"directory (no run.json)")
    assert list(tmp_path.iterdir()) == []


def test_latency_budget_with_a_lut_built_once_and_reused(tmp_path, cifar_dir, local_ray, capsys):
    lut = tmp_path / "cpu_lut.json"
    d1 = tmp_path / "run1"
    rc = main(["--space", SMALL, "--latency", "50ms", "--device", "cpu", "--lut", str(lut),
               "--trials", "2", "--data-dir", str(cifar_dir), "--run-dir", str(d1), "--no-asha",
               *FAST])
    assert rc == 0
    assert "building a latency LUT on cpu" in capsys.readouterr().out
    assert lut.is_file() and json.loads(lut.read_text())["device"] == "cpu"
    df1 = load_trials(d1)
    sampled = df1[df1.status != "running"]
    assert (sampled.latency_ms > 0).all()
    st = study(d1)
    for t in st.trials:
        assert t.user_attrs["latency_ms"] > 0
        assert (t.user_attrs["status"] == "over-budget") == (t.user_attrs["latency_ms"] > 50)
    best = json.loads((d1 / "best.json").read_text())
    assert best["measured_latency_ms"] > 0  # confirmed by measurement at the end

    # a budget below the space's fastest predicted network is refused before anything is
    # written, with the floor (exact for the LUT sum: no sample is below it)
    from igcv_nas.evaluate.latency import LUT
    from igcv_nas.search.settings import min_latency_at_target
    floor = min_latency_at_target(load_space(SMALL), "space", LUT.load(lut))
    assert 0 < floor <= sampled.latency_ms.min() + 1e-9
    before = lut.read_bytes()
    d4 = tmp_path / "run4"
    rc = main(["--space", SMALL, "--latency", f"{floor / 2:.6f}ms", "--lut", str(lut),
               "--data-dir", str(cifar_dir), "--run-dir", str(d4), *FAST])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("igcv-search: error: --latency ") and len(err.splitlines()) == 1
    assert f"is below the fastest network of space 'small' at target space: {floor:.3f} ms" in err
    assert not d4.exists() and lut.read_bytes() == before
    # without --lut the new run measures its LUT first and refuses before its directory exists
    d5 = tmp_path / "run5"
    rc = main(["--space", SMALL, "--latency", "0.000001ms", "--device", "cpu",
               "--data-dir", str(cifar_dir), "--run-dir", str(d5), *FAST])
    assert rc == 2
    assert "is below the fastest network of space 'small'" in capsys.readouterr().err
    assert not d5.exists()

    budget = float(sampled.latency_ms.median())
    d2 = tmp_path / "run2"
    rc = main(["--space", SMALL, "--latency", f"{budget:.4f}ms", "--lut", str(lut), "--trials", "2",
               "--sampler", "random", "--seed", "7", "--data-dir", str(cifar_dir),
               "--run-dir", str(d2), "--no-asha", *FAST])
    assert rc == 0
    assert f"using latency LUT {lut}" in capsys.readouterr().out
    df2 = load_trials(d2)
    assert (evaluated(df2).latency_ms <= budget + 1e-3).all()
    over = df2[df2.status == "over-budget"]
    assert (over.latency_ms > budget).all()

    # the learned predictor prices pieces the LUT lacks: nothing is measured, the LUT keeps its
    # entries
    entries = json.loads(lut.read_text())["entries"]
    d3 = tmp_path / "run3"
    rc = main(["--space", SMALL, "--latency", f"{budget:.4f}ms", "--lut", str(lut), "--trials", "2",
               "--latency-predictor", "learned", "--sampler", "random", "--seed", "8",
               "--data-dir", str(cifar_dir), "--run-dir", str(d3), "--no-asha", *FAST])
    assert rc == 0
    df3 = load_trials(d3)
    assert (df3[df3.status != "running"].latency_ms > 0).all()
    assert (evaluated(df3).latency_ms <= budget + 1e-3).all()
    assert json.loads(lut.read_text())["entries"] == entries
    assert json.loads((d3 / "run.json").read_text())["settings"]["latency_predictor"] == "learned"


def test_lut_of_another_device_is_refused_before_anything_is_written(tmp_path, capsys):
    lut = tmp_path / "lut.json"
    lut.write_text(json.dumps({"format": "igcv-nas/latency-lut@1", "device": "cuda:0", "batch": 1,
                               "channels_last": False, "entries": {}}))
    assert main(["--space", SMALL, "--latency", "5ms", "--device", "cpu", "--lut", str(lut),
                 "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "measured on cuda:0, not on --device cpu" in err
    assert not (tmp_path / "run").exists()


def test_a_diverging_trial_is_failed_with_its_reason_and_the_search_goes_on(tmp_path, cifar_dir,
                                                                           local_ray):
    d = tmp_path / "run"
    rc = main(["--space", SMALL, "--trials", "2", "--lr", "1e12", "--data-dir", str(cifar_dir),
               "--run-dir", str(d), "--no-asha", *FAST])
    assert rc == 3  # every architecture failed: the search produced nothing (EXIT_NO_RESULT)
    df = load_trials(d)
    ev = evaluated(df)
    assert len(ev) == 2 and (ev.status == "failed").all()
    assert ev.reason.str.startswith("NonFiniteLoss: training loss is").all()
    st = study(d)
    assert all(st.trials[int(n)].state == optuna.trial.TrialState.FAIL for n in ev.number)
    assert json.loads((d / "best.json").read_text()) is None


YAML_BAD = [
    ("format: igcv-nas/space@1\nname: x\nstages: [\n", "malformed YAML at line"),
    ("format: igcv-nas/space@1\nname: x\nfoo: 1\n", "'foo'"),
    (Path(SMALL).read_text().replace("width: [16, 24]", "width: []"), "width"),
]


@pytest.mark.parametrize("text,needle", YAML_BAD, ids=["malformed", "unknown-key", "empty-choices"])
def test_bad_space_files(text, needle, tmp_path, capsys):
    f = tmp_path / "space.yaml"
    f.write_text(text)
    assert main(["--space", str(f), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(f) in err and needle in err
    assert not (tmp_path / "run").exists()


def test_missing_data_and_no_network_is_one_line(tmp_path):
    """No data in the directory and no network (every connection goes to a closed local port):
    exit 2 naming the directory and how to provide the data; nothing created."""
    env = {**os.environ, "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    env.pop("IGCV_DATA_DIR", None)
    p = subprocess.run([sys.executable, "-m", "igcv_nas.cli.search", "--space", SMALL,
                        "--data-dir", str(tmp_path / "data"), "--run-dir", str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 2
    err = p.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert f"cifar10 is not in {tmp_path / 'data'} and downloading" in err
    assert not (tmp_path / "run").exists()


def test_zero_cost_proxy_as_the_objective(tmp_path, cifar_dir, local_ray):
    d = tmp_path / "run"
    rc = main(["--space", SMALL, "--flops", "4M", "--trials", "3", "--proxy", "zero-cost",
               "--zero-cost-metric", "naswot", "--data-dir", str(cifar_dir), "--run-dir", str(d),
               *FAST])
    assert rc == 0
    df = load_trials(d)
    done = df[df.status == "complete"]
    assert len(done) == 3 and done.val_acc.isna().all() and (done.zc_naswot > 0).all()
    assert sorted(c for c in df.columns if c.startswith("zc_")) == ["zc_naswot"]  # 1 computed
    st = study(d)
    for _, r in done.iterrows():
        assert st.trials[int(r.number)].value == pytest.approx(r.zc_naswot)
    best = json.loads((d / "best.json").read_text())
    assert best["zc_naswot"] == pytest.approx(done.zc_naswot.max())


def test_ladder_confirms_a_winner_and_survives_kill_9(tmp_path, cifar_dir):
    """The default scheduler: 4 architectures, the best 2 trained on 3x the images, the best 2
    of those re-trained with 2 fresh seeds each. kill -9 once a ladder training has started;
    the resume finishes the ladder without repeating what was done, and best.json holds the
    confirmed winner with its seeds."""
    d = tmp_path / "run"
    p = _cli("--space", SMALL, "--flops", "4M", "--trials", "4", "--seed", "2",
             "--max-concurrent", "1", "--data-dir", str(cifar_dir), "--run-dir", str(d), *FAST)
    def ladder_started(df):
        return "rung" in df and ((df.rung > 0) & (df.status == "complete")).sum() >= 1
    df = wait_for_table(d, ladder_started, timeout=900)
    os.kill(p.pid, signal.SIGKILL)
    p.communicate()
    assert ladder_started(df), "the ladder did not start in time"
    snap = pd.read_csv(d / "trials.csv")
    done_before = snap[(snap.rung > 0) & (snap.status == "complete")]

    r = _cli("--resume", str(d), "--data-dir", str(cifar_dir), "--quiet")
    out, err = r.communicate(timeout=300)
    assert r.returncode == 0, err[-2000:]
    df = load_trials(d)
    ev = evaluated(df)
    assert len(ev) == 4 and ev.arch_id.is_unique
    lad = df[df.rung > 0]
    assert (lad.status == "complete").all()
    promoted = set(lad[lad.rung == 1].number)
    top2 = set(ev.sort_values(["val_acc", "macs"], ascending=[False, True]).number[:2])
    assert promoted == top2 and (lad[lad.rung == 1].seed == 0).all()
    conf = lad[lad.rung == 2]
    assert sorted(zip(conf.number, conf.seed)) == sorted((n, s) for n in promoted for s in (1, 2))
    # what was done before the kill is kept, not repeated
    kept = lad.set_index(["number", "rung", "seed"])
    for _, row in done_before.iterrows():
        assert kept.loc[(row.number, row.rung, row.seed), "finished"] == pd.Timestamp(row.finished)
    best = json.loads((d / "best.json").read_text())
    assert best["confirmed"] is True
    w = best["confirmation"]["winner"]
    runs = conf[conf.number == w["number"]].sort_values("seed").val_acc.tolist()
    assert w["seeds"] == [1, 2] and w["runs"] == pytest.approx(runs)
    assert w["mean"] == pytest.approx(sum(runs) / 2)
    other = [c for c in best["confirmation"]["candidates"] if c["number"] != w["number"]]
    assert all(c["mean"] <= w["mean"] for c in other)
    assert best["number"] == w["number"] and best["spec"] == json.loads(
        load(RunDir(d).spec_file(w["number"])).to_json())
    assert "confirmed best: trial" in out
    from igcv_nas.artifacts.report import render
    md = render(d)["report.md"]
    assert f"Confirmed best: trial {w['number']}, val_acc {w['mean']:.4f}" in md
    for name in (STUDY_NAME, "igcv-search/ladder"):
        st = optuna.load_study(study_name=name, storage=JournalStorage(
            JournalFileBackend(str(d / "study.journal"))))
        assert not [t for t in st.trials if t.state == optuna.trial.TrialState.RUNNING]
    meta = json.loads((d / "run.json").read_text())
    assert meta["status"] == "finished" and meta["engine"]["ladder"][1]["seeds"] == [1, 2]


def test_evolution_sampler_children_stay_in_the_band(tmp_path, cifar_dir, local_ray):
    d = tmp_path / "run"
    rc = main(["--space", SMALL, "--flops", "4M", "--trials", "7", "--sampler", "evolution",
               "--seed", "1", "--max-concurrent", "1", "--data-dir", str(cifar_dir),
               "--run-dir", str(d), "--no-asha",
               *FAST])
    assert rc == 0
    df = load_trials(d)
    ev = evaluated(df)
    assert len(ev) == 7 and ev.arch_id.is_unique
    assert ev.macs.between(2_800_000, 4_000_000).all()
    children = ev[ev.parent.notna()]
    assert len(children) == 3  # population 4: 4 random start-up draws, then 3 children
    assert set(children.parent.astype(int)) <= set(ev.number)
    # the accept hook keeps children in the band: no child was rejected
    assert df[df.parent.notna()].status.isin(["complete"]).all()


def _copy_run(src: Path, dst: Path) -> Path:
    import shutil
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("ray"))
    return dst


def _snapshot(d: Path) -> dict:
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()
            and p.name != ".lock"}


RESUME_BAD = [
    ("no-journal", lambda d: (d / "study.journal").unlink(),
     "is missing or empty but the run has recorded trials; refusing to resume into a new study"),
    ("garbled-journal", lambda d: (d / "study.journal").write_bytes(
        (d / "study.journal").read_bytes().replace(b'{"op_code"', b'{"op_c0de', 1).replace(
            b'"op_code":0', b'"op_c0de":0', 1)), "record 1 (line 1) is not a journal record"),
    ("edited-space", lambda d: (d / "space.yaml").write_text(
        (d / "space.yaml").read_text().replace("expand: [2, 4]", "expand: [2, 6]")),
     "was changed since the run was created"),
    ("run-json-list", lambda d: (d / "run.json").write_text("[1, 2]"), "not a JSON object"),
    ("run-json-no-settings", lambda d: (d / "run.json").write_text(json.dumps(
        {**json.loads((d / "run.json").read_text()), "settings": 3})),
     "'settings' is missing or not a dict"),
]


@pytest.mark.parametrize("name,damage,needle", RESUME_BAD, ids=[r[0] for r in RESUME_BAD])
def test_resume_of_a_damaged_run_dir_changes_no_byte(small_run, tmp_path, capsys, name, damage,
                                                    needle):
    d = _copy_run(small_run, tmp_path / "run")
    damage(d)
    before = _snapshot(d)
    t0 = time.time()
    assert main(["--resume", str(d), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert time.time() - t0 < 30  # a hang guard, not a timing (loaded machines)
    assert _snapshot(d) == before


def test_sigterm_is_handled_like_ctrl_c(tmp_path, cifar_dir):
    d = tmp_path / "run"
    p = _cli("--space", SMALL, "--flops", "4M", "--trials", "8", "--seed", "4", "--no-asha",
             "--data-dir", str(cifar_dir), "--run-dir", str(d), *FAST)
    wait_for_table(d, lambda df: (df.status == "complete").sum() >= 1, timeout=900)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 143, err[-2000:]
    assert f"terminated (SIGTERM); continue with: igcv-search --resume {d}" in out
    assert "Traceback" not in err
    assert json.loads((d / "run.json").read_text())["status"] == "interrupted"
    r = _cli("--resume", str(d), "--data-dir", str(cifar_dir), "--quiet")
    out, err = r.communicate(timeout=300)
    assert r.returncode == 0, err[-2000:]
    assert len(evaluated(load_trials(d))) == 8
