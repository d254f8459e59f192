"""Losing the Ray head mid-search, on a real loopback cluster (``ray start`` processes): the
driver says so in one line, ``run.json`` says interrupted, the exit status is 4, and the printed
resume command continues the search on a new cluster."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from igcv_nas.search.runstore import load_trials

from .test_cluster_share_nothing import LoopbackCluster, _wait_nodes, driver_env
from .test_search import wait_for_table

pytestmark = pytest.mark.integration

SMALL = str(Path(__file__).parent / "spaces" / "small.yaml")


def _cluster(logs: Path) -> LoopbackCluster:
    """A head without CPUs and one 1-CPU worker node, each its own process group."""
    c = LoopbackCluster(logs)
    try:
        c.start(["--head", "--port", str(c.port), "--num-cpus", "0", "--num-gpus", "0",
                 "--include-dashboard", "false"], log="head")
        _wait_nodes(c.address, 1)
        c.start(["--address", c.address, "--num-cpus", "1", "--num-gpus", "0"], log="worker")
        _wait_nodes(c.address, 2)
    except BaseException:
        c.stop()  # never leave nodes behind
        raise
    return c


def test_losing_the_head_ends_the_search_in_one_line_and_it_resumes(tmp_path, cifar_dir):
    d = tmp_path / "run"
    (tmp_path / "one").mkdir()
    first = _cluster(tmp_path / "one")
    try:
        p = subprocess.Popen(
            [sys.executable, "-m", "igcv_nas.cli.search", "--address", first.address,
             "--space", SMALL, "--flops", "4M", "--trials", "5", "--seed", "3", "--epochs", "6",
             "--train-fraction", "0.01", "--batch-size", "16", "--val-size", "100",
             "--scheduler", "none", "--quiet", "--data-dir", str(cifar_dir), "--run-dir",
             str(d)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=driver_env())
        df = wait_for_table(d, lambda df: (df.status == "complete").sum() >= 1, timeout=300)
        assert (df.status == "complete").sum() >= 1 and p.poll() is None, "nothing to cut short"
        os.killpg(first.procs[0].pid, signal.SIGKILL)  # the head: GCS, its raylet, everything
        out, err = p.communicate(timeout=120)
    finally:
        first.stop()
    lines = err.strip().splitlines()
    assert p.returncode == 4, err[-3000:]
    assert "Traceback" not in err and "gcs_client" not in err, err[-3000:]  # not Ray's end
    assert lines[-1].startswith(f"igcv-search: error: lost the Ray cluster at {first.address}: "
                                f"its head (GCS ")
    again = f"igcv-search --resume {d} --address {first.address}"
    assert lines[-1].endswith(f"{d / 'run.json'} says interrupted; when the cluster is back, "
                              f"continue with: {again}")
    assert json.loads((d / "run.json").read_text())["status"] == "interrupted"

    (tmp_path / "two").mkdir()
    second = _cluster(tmp_path / "two")  # the cluster is back (at another port)
    try:
        r = subprocess.run([sys.executable, "-m", "igcv_nas.cli.search", "--resume", str(d),
                            "--address", second.address, "--quiet"],
                           capture_output=True, text=True, timeout=600,
                           env=driver_env())
    finally:
        second.stop()
    assert r.returncode == 0, r.stderr[-3000:]
    df = load_trials(d)
    ev = df[df.status.isin(["complete", "pruned", "failed"])]
    assert len(ev) == 5 and (ev.status == "complete").all() and ev.arch_id.is_unique
    meta = json.loads((d / "run.json").read_text())
    assert meta["status"] == "finished" and len(meta["attempts"]) == 2
