"""One study, many drivers: two igcv-search processes (each with its own run directory and its
own local Ray) on one study in a real PostgreSQL server started by the test; one driver is
SIGKILLed mid-search and resumed. The database then holds every evaluated architecture exactly
once, and their number is --trials."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from igcv_nas.search.runstore import load_trials

from .test_search import wait_for_table

# the fixtures: postgres_server, postgres_db_url
pytest_plugins = ["tests.services"]

pytestmark = pytest.mark.integration

SMALL = str(Path(__file__).parent / "spaces" / "small.yaml")
TRIALS = 8


def _driver(url: str, run_dir: Path, cifar_dir: Path, *extra: str) -> subprocess.Popen:
    args = ["--space", SMALL, "--flops", "4M", "--trials", str(TRIALS), "--seed", "1",
            "--epochs", "3", "--train-fraction", "0.002", "--batch-size", "16",
            "--val-size", "100", "--max-concurrent", "1", "--quiet",
            "--data-dir", str(cifar_dir), "--storage", url, "--study-name", "shared-test"]
    return subprocess.Popen([sys.executable, "-m", "igcv_nas.cli.search", *args, "--run-dir",
                             str(run_dir), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_drivers_share_one_postgres_study_through_a_kill_and_resume(postgres_db_url,
                                                                       tmp_path, cifar_dir):
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a = _driver(postgres_db_url, a_dir, cifar_dir)
    # the first driver creates the study's tables; then the second joins
    wait_for_table(a_dir, lambda df: len(df) > 0, timeout=300)
    b = _driver(postgres_db_url, b_dir, cifar_dir)
    df = wait_for_table(a_dir, lambda df: (df.status == "complete").sum() >= 1
                        and (df.status == "running").sum() >= 1, timeout=600)
    os.kill(a.pid, signal.SIGKILL)
    a.communicate()
    assert (df.status == "complete").sum() >= 1, "driver a completed nothing before the deadline"
    r = subprocess.run([sys.executable, "-m", "igcv_nas.cli.search", "--resume", str(a_dir),
                        "--data-dir", str(cifar_dir), "--quiet"],
                       capture_output=True, text=True, timeout=900)
    out_b, err_b = b.communicate(timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert b.returncode == 0, err_b[-3000:]

    # what the database holds
    study = optuna.load_study(study_name="shared-test", storage=postgres_db_url)
    trials = study.get_trials(deepcopy=False)
    status = [t.user_attrs.get("status") for t in trials]
    evaluated = [t for t, s in zip(trials, status) if s in ("complete", "pruned", "failed")]
    assert len(evaluated) == TRIALS
    assert len({t.user_attrs["arch_id"] for t in evaluated}) == TRIALS  # each exactly once
    assert "evaluating" not in status
    drivers = {json.loads((d / "run.json").read_text())["driver"] for d in (a_dir, b_dir)}
    assert len(drivers) == 2 and {t.user_attrs["driver"] for t in evaluated} == drivers
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in evaluated
               if t.user_attrs["status"] == "complete")

    # each run directory reports the whole study, with the spec of every architecture
    for d in (a_dir, b_dir):
        tab = load_trials(d)
        mine = tab[tab.status.isin(["complete", "pruned", "failed"])]
        assert set(mine.arch_id) <= {t.user_attrs["arch_id"] for t in evaluated}
        for n in mine.number:
            assert (d / "trials" / f"{n:05d}" / "spec.json").is_file()
    last = max((a_dir, b_dir), key=lambda d: (d / "trials.csv").stat().st_mtime)
    tab = load_trials(last)
    assert (tab.status.isin(["complete", "pruned", "failed"])).sum() == TRIALS
    assert set(tab.driver.dropna()) == drivers
    best = json.loads((last / "best.json").read_text())
    assert best["arch_id"] in {t.user_attrs["arch_id"] for t in evaluated}


def test_a_second_driver_with_other_settings_is_refused(postgres_db_url, tmp_path, cifar_dir):
    from igcv_nas.search.settings import Settings
    from igcv_nas.search.studystore import fingerprint
    # a study made by a search whose MACs budget is 5M
    study = optuna.create_study(storage=postgres_db_url, study_name="shared-test")
    study.set_user_attr("fingerprint", fingerprint(Settings(macs=5_000_000), "0" * 64))
    d = tmp_path / "other"
    p = _driver(postgres_db_url, d, cifar_dir)
    out, err = p.communicate(timeout=300)
    lines = err.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"igcv-search: error: --storage {postgres_db_url}: study "
                               f"'shared-test' was made by a search with space_sha256 '000")
    assert not d.exists()
