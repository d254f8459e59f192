"""A search started from Python (igcv_nas.search.session) gets the guarantees of igcv-search: the
same refusals with the same messages before anything starts or is written, the same resume rules,
the run lock released on every exit. The checks need no Ray (Ray's start is replaced where a
test goes past it); the README example at the end runs a real tiny search."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from igcv_nas.cli.search import main
from igcv_nas.errors import IGCVError
from igcv_nas.search.runstore import RunDir, RunError, RunLocked
from igcv_nas.search.settings import SearchError, Settings
from igcv_nas.search.session import PreparedSearch, prepare_search
from igcv_nas.arch.space import load_space

SPACES = Path(__file__).parent / "spaces"
SMALL = str(SPACES / "small.yaml")
TINY_BUDGET = {"mode": "training", "zero_cost": [], "zc_batch": 16, "val_size": 100,
               "dropout": 0.0, "train": {"epochs": 1, "batch_size": 16, "lr": 0.05,
                                         "train_fraction": 0.002, "device": "cpu",
                                         "eval_each_epoch": False}}
TINY_PROXY = {"epochs": 1, "train_fraction": 0.002, "batch_size": 16, "val_size": 100}


def assert_nothing_created(tmp_path: Path, *keep: str) -> None:
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def cli_error(argv: list[str], capsys) -> str:
    """The one line igcv-search prints for ``argv`` (after its ``error:``), checking exit 2."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("igcv-search: error: "), err
    return err.removeprefix("igcv-search: error: ")


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


# ---------------------------------------------------------------------------------------------
# the same refusals as the CLI, before anything is created

# (CLI arguments, the same search as library arguments, the error class)
SAME = [
    (["--flops", "10M"], {"settings": {"macs": 10_000_000}}, SearchError),
    (["--params", "1M"], {"settings": {"params": 1_000_000}}, SearchError),
    (["--flops", "5G", "--flops-min", "4G"],
     {"settings": {"macs": 5_000_000_000, "macs_min": 4_000_000_000}}, SearchError),
    (["--target", "8:10"], {"settings": {"target": "8:10"}}, SearchError),
    (["--target", "foo"], {"settings": {"target": "foo"}}, SearchError),
    (["--trials", "0"], {"settings": {"trials": 0}}, SearchError),
    (["--seed", "-1"], {"settings": {"seed": -1}}, SearchError),
    (["--sampler", "evolution", "--objective", "pareto"],
     {"settings": {"sampler": "evolution", "objective": "pareto"}}, SearchError),
    (["--gpus-per-trial", "1"], {"settings": {"gpus_per_trial": 1.0}}, SearchError),
    (["--cpus-per-trial", "999"], {"settings": {"cpus_per_trial": 999.0}}, SearchError),
    (["--address", "127.0.0.1:1"], {"settings": {"address": "127.0.0.1:1"}}, SearchError),
    (["--device", "tpu"], {"settings": {"latency_device": "tpu"}}, SearchError),
    (["--epochs", "0"], {"proxy_budget": {"epochs": 0}}, SearchError),
    (["--lr", "nan"], {"proxy_budget": {"lr": float("nan")}}, SearchError),
    (["--steps", "-3"], {"proxy_budget": {"steps": -3}}, SearchError),
    (["--space", "nosuch"], {"settings": {"space": "nosuch"}}, IGCVError),
    (["--dataset", "/nonexistent/folder"], {"settings": {"dataset": "/nonexistent/folder"}},
     IGCVError),
]


@pytest.mark.parametrize("argv,kw,cls", SAME, ids=[" ".join(a) for a, _, _ in SAME])
def test_library_refuses_what_the_cli_refuses_with_its_message(argv, kw, cls, tmp_path, capsys):
    run_dir, data = tmp_path / "run", tmp_path / "nodata"
    expected = cli_error([*argv, "--run-dir", str(run_dir), "--data-dir", str(data)], capsys)
    assert_nothing_created(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(cls) as e:
        prepare_search({**kw.get("settings", {}), "data_dir": str(data)}, run_dir=run_dir,
                       proxy_budget=kw.get("proxy_budget"))
    assert time.perf_counter() - t0 < 30  # a hang guard, not a timing (loaded machines)
    assert one_line(e.value) == expected
    assert_nothing_created(tmp_path)


def test_a_refused_budget_is_an_input_error_before_any_run_directory(tmp_path):
    with pytest.raises(SearchError, match=r"--flops 10\.00M \(10,000,000\) is below the smallest "
                                          r"network of space 'igcv3' at target space: 62\.41M"):
        prepare_search({"macs": 10_000_000}, run_dir=tmp_path / "run")
    with pytest.raises(ValueError):  # and still a ValueError, as the package's input errors are
        prepare_search({"space": SMALL, "macs": 1000}, run_dir=tmp_path / "run")
    assert_nothing_created(tmp_path)


@pytest.mark.parametrize("settings,needle", [
    ({"macs": 0}, "--flops 0; accepted: a positive count"),
    ({"latency_ms": -1.0}, "--latency -1.0; accepted: a positive duration in ms"),
    ({"latency_ms": float("inf")}, "--latency inf"),
    ({"flops": 300_000_000}, "unknown setting 'flops'; accepted: space, target, macs"),
    ({"budget": {}}, "unknown setting 'budget' (give the proxy budget as proxy_budget=...)"),
])
def test_values_only_python_can_give_are_refused(settings, needle, tmp_path):
    with pytest.raises(SearchError) as e:
        prepare_search({"space": SMALL, **settings}, run_dir=tmp_path / "run")
    assert needle in str(e.value)
    with pytest.raises(SearchError, match="unknown proxy budget key 'epoch'"):
        prepare_search({"space": SMALL}, proxy_budget={"epoch": 1})
    assert_nothing_created(tmp_path)


def test_an_existing_run_dir_is_refused_and_resume_excludes_run_dir(tmp_path, capsys):
    d = tmp_path / "run"
    d.mkdir()
    (d / "x").write_text("")
    expected = cli_error(["--space", SMALL, "--run-dir", str(d)], capsys)
    with pytest.raises(RunError) as e:
        prepare_search({"space": SMALL}, run_dir=d)
    assert one_line(e.value) == expected and "already exists and is not empty" in expected
    with pytest.raises(SearchError, match="give either --resume RUN_DIR or --run-dir, not both"):
        prepare_search(resume=d, run_dir=tmp_path / "other")


# ---------------------------------------------------------------------------------------------
# resume: the run directory checked whole, the same rules, the lock released

def fake_run(path: Path, **settings) -> Path:
    """A run directory as igcv-search leaves it after a first attempt with no trials (written
    without Ray: the resume checks read only run.json, space.yaml, the journal, trials/)."""
    space = load_space(SMALL)
    s = Settings(space=SMALL, macs=4_000_000, **settings)
    RunDir.create(path, {"settings": s.to_dict(), "space": {
        "name": space.name, "source": space.source, "sha256": space.sha256},
        "seed": s.seed, "status": "interrupted", "attempts": [{"attempt": 1}],
        "elapsed_s": 1.0}, space.raw)
    return path


def snapshot(d: Path) -> dict:
    return {p.relative_to(d): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()
            and p.name != ".lock"}


def lock_is_free(d: Path) -> bool:
    probe = RunDir(d)
    try:
        probe.lock()
    except RunLocked:
        return False
    probe.unlock()
    return True


DAMAGE = [
    ("trials-no-journal", lambda d: (d / "trials" / "00000").mkdir(),
     "is missing or empty but the run has recorded trials; refusing to resume into a new study"),
    ("garbled-journal", lambda d: (d / "study.journal").write_bytes(b'{"op_c0de": 0}\n{"op_code": '
                                                                    b'1}\n'),
     "record 1 (line 1) is not a journal record"),
    ("edited-space", lambda d: (d / "space.yaml").write_text(
        (d / "space.yaml").read_text().replace("expand: [2, 4]", "expand: [2, 6]")),
     "was changed since the run was created"),
    ("run-json-list", lambda d: (d / "run.json").write_text("[1, 2]"), "not a JSON object"),
    ("run-json-no-settings", lambda d: (d / "run.json").write_text(json.dumps(
        {**json.loads((d / "run.json").read_text()), "settings": 3})),
     "'settings' is missing or not a dict"),
    ("changed-budget", lambda d: None, "macs was 4000000, now 5000000; only trials"),
]


@pytest.mark.parametrize("name,damage,needle", DAMAGE, ids=[r[0] for r in DAMAGE])
def test_resume_through_the_library_refuses_as_the_cli_does(name, damage, needle, tmp_path,
                                                           capsys):
    d = fake_run(tmp_path / "run")
    damage(d)
    before = snapshot(d)
    flops = ["--flops", "5M"] if name == "changed-budget" else []
    expected = cli_error(["--resume", str(d), *flops, "--quiet"], capsys)
    assert needle in expected
    t0 = time.perf_counter()
    with pytest.raises(RunError) as e:
        prepare_search({"macs": 5_000_000} if flops else None, resume=d)
    assert time.perf_counter() - t0 < 30  # a hang guard, not a timing (loaded machines)
    assert one_line(e.value) == expected
    assert snapshot(d) == before and lock_is_free(d)


def test_resume_refuses_a_changed_space_or_proxy_budget_unless_forced(tmp_path, cifar_dir):
    d = fake_run(tmp_path / "run", budget=TINY_BUDGET)
    with pytest.raises(RunError, match="differs from the space of"):
        prepare_search({"space": str(SPACES / "tiny.yaml")}, resume=d)
    with pytest.raises(RunError, match="the proxy budget differs from the run's; pass --force"):
        prepare_search(resume=d, proxy_budget={"epochs": 2})
    assert lock_is_free(d)
    with prepare_search({"data_dir": str(cifar_dir)}, resume=d,
                        proxy_budget={"epochs": 2}, force=True) as prep:
        assert not lock_is_free(d)  # a resume holds the lock from its preparation on
        assert prep.settings.budget["train"]["epochs"] == 2 and prep.resuming
    assert lock_is_free(d)


def test_a_live_search_holding_the_run_is_refused_at_once(tmp_path, capsys):
    d = fake_run(tmp_path / "run")
    with RunDir(d).locked():
        expected = cli_error(["--resume", str(d)], capsys)
        with pytest.raises(RunLocked) as e:
            prepare_search(resume=d)
        assert one_line(e.value) == expected and "is in use by pid" in expected
        assert not lock_is_free(d)  # the refusal did not release the holder's lock
    assert lock_is_free(d)


def test_locked_releases_on_an_exception(tmp_path):
    d = fake_run(tmp_path / "run")
    run = RunDir(d)
    with pytest.raises(KeyError):
        with run.locked():
            assert run.is_locked and not lock_is_free(d)
            raise KeyError("boom")
    assert not run.is_locked and lock_is_free(d)


# ---------------------------------------------------------------------------------------------
# running: defaults, the run directory, the lock on every exit (Ray's start replaced)

@pytest.fixture
def prepared(tmp_path, cifar_dir) -> PreparedSearch:
    return prepare_search({"space": SMALL, "macs": 4_000_000, "trials": 2,
                           "data_dir": str(cifar_dir)}, run_dir=tmp_path / "run",
                          proxy_budget=TINY_PROXY, command=["test"])


def fake_cluster(monkeypatch, resources: dict, nodes: list[tuple[float, float]] | None = None
                 ) -> list:
    """Replace Ray's start by ``resources`` (on one node, or on ``nodes``: (CPU, GPU) each) and
    run_search by a recorder; returns the calls."""
    import igcv_nas.search.raytune
    import igcv_nas.search.engine
    calls = []
    shapes = nodes or [(resources.get("CPU", 0.0), resources.get("GPU", 0.0))]
    cluster = igcv_nas.search.raytune.Cluster(
        resources, [{"id": f"{i:x}" * 56, "host": "127.0.0.1", "CPU": c, "GPU": g}
                    for i, (c, g) in enumerate(shapes)])
    monkeypatch.setattr(igcv_nas.search.raytune, "connect",
                        lambda address, quiet=True, env_vars=None: cluster)

    def run_search(run, settings, space, splits, on_change=None, lut=None, quiet=True, **kw):
        calls.append((run, settings, splits, lock_is_free(run.path)))
        return "outcome"
    monkeypatch.setattr(igcv_nas.search.engine, "run_search", run_search)
    return calls


def test_prepared_splits_hold_the_test_split_out(prepared):
    assert len(prepared.splits.test) == 0 and prepared.test_held_out == 10_000
    assert len(prepared.splits.train) == 45_000 and len(prepared.splits.val) == 5_000
    assert prepared.run_dir is None and prepared.phase == "prepared"


def test_run_creates_the_run_directory_under_its_lock_and_releases_it(prepared, tmp_path,
                                                                      monkeypatch):
    calls = fake_cluster(monkeypatch, {"CPU": 2.0})
    started = []
    with prepared:
        assert prepared.run(on_start=lambda p: started.append(p.run_dir.path)) == "outcome"
    d = tmp_path / "run"
    (run, settings, splits, free), = calls
    assert run.path == d and not free  # held while the search ran
    assert started == [d] and lock_is_free(d) and prepared.phase == "done"
    assert len(splits.test) == 0
    meta = json.loads((d / "run.json").read_text())
    assert meta["command"] == ["test"] and meta["status"] == "created"
    assert meta["data"] == {"dataset": "cifar10", "train": 45000, "val": 5000,
                            "test_held_out": 10000, "classes": 10}
    assert meta["settings"] == settings.to_dict()
    assert settings.budget["train"]["epochs"] == 1 and settings.budget["val_size"] == 100
    assert settings.gpus_per_trial == 0
    with pytest.raises(SearchError, match="already run or was closed"):
        prepared.run()


def test_gpu_defaults_come_from_the_cluster(prepared, monkeypatch):
    import torch
    calls = fake_cluster(monkeypatch, {"CPU": 8.0, "GPU": 2.0})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the cluster's GPUs
    prepared.run()
    settings = calls[0][1]
    assert (settings.gpus_per_trial, settings.cpus_per_trial) == (1.0, 4.0)
    assert settings.budget["train"]["device"] == "cuda" and settings.budget["train"]["epochs"] == 1


def test_gpu_trials_get_the_cpu_share_of_the_smallest_gpu_node(prepared, monkeypatch):
    """A CPU head (16 CPUs, no GPU) with a 2-GPU node of 8 CPUs and a 4-GPU node of 4 CPUs: a
    trial takes 1 CPU (4 / 4), so that all 6 GPUs can hold one; the cluster's total (28 / 6)
    would leave the 4-GPU node idle."""
    calls = fake_cluster(monkeypatch, {"CPU": 28.0, "GPU": 6.0}, nodes=[(16, 0), (8, 2), (4, 4)])
    prepared.run()
    settings = calls[0][1]
    assert (settings.gpus_per_trial, settings.cpus_per_trial) == (1.0, 1.0)


def test_the_lock_is_released_when_a_run_fails_after_creating_the_run(prepared, tmp_path,
                                                                       monkeypatch):
    calls = fake_cluster(monkeypatch, {"CPU": 2.0})

    def boom(p):
        assert not lock_is_free(p.run_dir.path)
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        prepared.run(on_start=boom)
    assert calls == [] and lock_is_free(tmp_path / "run") and prepared.phase == "starting"


def test_ctrl_c_in_the_search_marks_the_run_interrupted_and_releases_the_lock(prepared, tmp_path,
                                                                             monkeypatch):
    import igcv_nas.search.engine
    fake_cluster(monkeypatch, {"CPU": 2.0})

    def interrupted(*a, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(igcv_nas.search.engine, "run_search", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepared.run()
    d = tmp_path / "run"
    assert json.loads((d / "run.json").read_text())["status"] == "interrupted"
    assert lock_is_free(d) and prepared.phase == "searching"


def test_a_ray_that_cannot_start_is_one_search_error(prepared, tmp_path, monkeypatch):
    import igcv_nas.search.raytune

    def refuse(address, quiet=True, env_vars=None):
        raise ConnectionError("no\nroute")
    monkeypatch.setattr(igcv_nas.search.raytune, "connect", refuse)
    with pytest.raises(SearchError, match="cannot start or reach Ray: no"):
        prepared.run()
    assert_nothing_created(tmp_path)


# ---------------------------------------------------------------------------------------------
# the README example, with a tiny space and proxy

def readme_example() -> str:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    m = re.search(r"### From Python\n.*?```python\n(.*?)```", text, re.S)
    assert m, "README.md has no '### From Python' section with a python block"
    return m.group(1)


@pytest.mark.integration
def test_the_readme_python_example_runs(tmp_path, cifar_dir, monkeypatch, capsys):
    """The README's calls as written, with the space, budget, trials and run directory made
    tiny (each replaced literal must be in the README) and a tiny proxy budget."""
    code = readme_example()
    run_dir = tmp_path / "runs" / "igcv3-300M"
    for old, new in ((' "igcv3",', f" {SMALL!r},"), ("300_000_000", "4_000_000"),
                     ('"trials": 20', '"trials": 2'), ('"trials": 30', '"trials": 3'),
                     ('"seed": 0', '"seed": 0, "scheduler": "none"'),
                     ('"runs/igcv3-300M"', repr(str(run_dir))),
                     ("prepare_search(settings,", f"prepare_search(settings, proxy_budget="
                                                  f"{TINY_PROXY!r},")):
        assert old in code, f"the README example no longer has {old!r}"
        code = code.replace(old, new)
    monkeypatch.setenv("IGCV_DATA_DIR", str(cifar_dir))
    try:
        exec(compile(code, "README.md", "exec"), {})
    finally:
        import ray
        ray.shutdown()
    out = capsys.readouterr().out
    assert "--flops 10.00M (10,000,000) is below the smallest network of space 'igcv3'" in out
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "finished" and meta["settings"]["trials"] == 3
    assert len(meta["attempts"]) == 2 and lock_is_free(run_dir)


CTRL_C_ARGV = ["--space", SMALL, "--flops", "4M", "--trials", "2", "--epochs", "1",
               "--train-fraction", "0.002", "--batch-size", "16", "--val-size", "100", "--quiet"]


def test_ctrl_c_before_the_run_directory_exists_says_nothing_was_written(tmp_path, cifar_dir,
                                                                           monkeypatch, capsys):
    fake_cluster(monkeypatch, {"CPU": 2.0})

    def interrupted(self, resources):
        raise KeyboardInterrupt
    monkeypatch.setattr(PreparedSearch, "_defaults", interrupted)
    assert main([*CTRL_C_ARGV, "--data-dir", str(cifar_dir), "--run-dir",
                 str(tmp_path / "run")]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "igcv-search: interrupted before the search started; nothing was written")
    assert_nothing_created(tmp_path)


def test_ctrl_c_after_the_run_directory_exists_names_the_resume(tmp_path, cifar_dir, monkeypatch,
                                                                capsys):
    calls = fake_cluster(monkeypatch, {"CPU": 2.0})

    def interrupted(self):
        raise KeyboardInterrupt
    monkeypatch.setattr(PreparedSearch, "describe", interrupted)
    d = tmp_path / "run"
    assert main([*CTRL_C_ARGV, "--data-dir", str(cifar_dir), "--run-dir", str(d)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"igcv-search: interrupted before the search started; continue with: igcv-search "
        f"--resume {d}")
    assert lock_is_free(d) and calls == []
    with prepare_search({"data_dir": str(cifar_dir)}, resume=d) as prep:  # the advice works
        assert prep.run() == "outcome"
    assert len(calls) == 1 and calls[0][0].path == d


@pytest.mark.parametrize("url, says", [
    ("redis://127.0.0.1/0", "--storage 'redis://127.0.0.1/0'; accepted: postgresql://..., "
                            "mysql://..., sqlite:///PATH"),
    ("postgresql://me:secret@127.0.0.1/db", "--storage: the URL holds a password, and the URL "
                                            "is recorded in run.json"),
    ("grpc://127.0.0.1", "--storage 'grpc://127.0.0.1': a gRPC storage proxy is grpc://HOST:PORT"),
])
def test_a_storage_url_that_cannot_be_used_is_refused_before_anything(tmp_path, cifar_dir,
                                                                      capsys, url, says):
    code = main(["--space", SMALL, "--flops", "4M", "--trials", "1", "--data-dir",
                 str(cifar_dir), "--run-dir", str(tmp_path / "run"), "--storage", url])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(f"igcv-search: error: {says}")
    assert "secret" not in err[0]
    assert_nothing_created(tmp_path)


def test_a_shared_study_has_no_ladder(tmp_path, cifar_dir):
    with pytest.raises(SearchError, match="^--storage: the ladder's promotions are decided by "
                                          "one driver"):
        prepare_search({"space": SMALL, "macs": 4_000_000, "data_dir": str(cifar_dir),
                        "storage": "sqlite:////tmp/x.db", "scheduler": "ladder"},
                       run_dir=tmp_path / "run")
    with prepare_search({"space": SMALL, "macs": 4_000_000, "data_dir": str(cifar_dir),
                         "storage": f"sqlite:///{tmp_path / 's.db'}"},
                        run_dir=tmp_path / "run") as p:
        assert p.settings.scheduler == "asha" and not p.settings.uses_ladder
    assert_nothing_created(tmp_path)


@pytest.mark.parametrize("val_size", [-5, 0, 5001, 100_000])
def test_a_validation_size_outside_the_split_is_refused(tmp_path, cifar_dir, val_size):
    with pytest.raises(SearchError) as e:
        prepare_search({"space": SMALL, "macs": 4_000_000, "data_dir": str(cifar_dir)},
                       run_dir=tmp_path / "run", proxy_budget={"val_size": val_size})
    assert str(e.value) == (f"--val-size {val_size}; accepted: an integer from 1 to 5,000 "
                            f"(the validation split held out of the training set)")
    assert_nothing_created(tmp_path)


@pytest.mark.parametrize("seconds", [0.001, 9.9])
def test_a_time_budget_no_trial_can_finish_in_is_refused(tmp_path, cifar_dir, seconds):
    with pytest.raises(SearchError, match=rf"^--time-budget {seconds:g} s; accepted: a duration "
                                          r"of at least 10 s"):
        prepare_search({"space": SMALL, "macs": 4_000_000, "data_dir": str(cifar_dir),
                        "time_budget_s": seconds}, run_dir=tmp_path / "run")
    assert_nothing_created(tmp_path)


@pytest.mark.parametrize("how", ["our handler", "ray's handler"])
def test_sigterm_while_ray_starts_is_one_line_and_143(tmp_path, cifar_dir, monkeypatch, capsys,
                                                      how):
    """SIGTERM during ray.init: before Ray installs its own handler (ours raises) or after (it
    exits with the signal number, which is mapped): one line, exit 143, nothing written."""
    import os
    import signal

    import igcv_nas.search.raytune

    def connect(address, quiet=True, env_vars=None):
        if how == "our handler":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this
        raise SystemExit(signal.SIGTERM)
    monkeypatch.setattr(igcv_nas.search.raytune, "connect", connect)
    previous = signal.getsignal(signal.SIGTERM)
    assert main([*CTRL_C_ARGV, "--data-dir", str(cifar_dir), "--run-dir",
                 str(tmp_path / "run")]) == 143
    assert capsys.readouterr().err.strip().splitlines() == [
        "igcv-search: terminated (SIGTERM) while Ray was starting; nothing was searched"]
    assert signal.getsignal(signal.SIGTERM) is previous  # restored
    assert_nothing_created(tmp_path)


def test_ray_address_from_the_environment_is_joined_unless_an_address_is_given(
        tmp_path, cifar_dir, monkeypatch):
    """Inside `ray job submit` (which sets RAY_ADDRESS) the search joins that cluster; a given
    --address wins; without either it starts its own instance."""
    import socket
    with socket.socket() as head:  # something that accepts TCP where the head would be
        head.bind(("127.0.0.1", 0))
        head.listen()
        addr = f"127.0.0.1:{head.getsockname()[1]}"
        monkeypatch.setenv("RAY_ADDRESS", addr)
        base = {"space": SMALL, "macs": 4_000_000, "data_dir": str(cifar_dir)}
        with prepare_search(base, run_dir=tmp_path / "a") as p:
            assert p.settings.address == addr
        with prepare_search({**base, "address": "local"}, run_dir=tmp_path / "b") as p:
            assert p.settings.address == "local"
        monkeypatch.delenv("RAY_ADDRESS")
        with prepare_search(base, run_dir=tmp_path / "c") as p:
            assert p.settings.address is None
    assert_nothing_created(tmp_path)
