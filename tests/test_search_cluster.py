"""igcv-search --address on a real 2-node Ray cluster started on this machine (loopback).

``ray.cluster_utils.Cluster`` starts a head and a worker node as separate raylet processes,
each with its own resources (one CPU each), exactly as ``ray start --head`` and
``ray start --address`` would, but it can be shut down without touching other Ray instances."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from igcv_nas.search.runstore import load_trials

from .test_search import wait_for_table

pytestmark = pytest.mark.integration  # a real 2-node Ray cluster

SMALL = str(Path(__file__).parent / "spaces" / "small.yaml")


def _search_cmd(address: str, run_dir: Path, cifar_dir: Path, trials: int,
                epochs: int) -> list[str]:
    """igcv-search on the cluster at ``address``: two trials at a time, one CPU each."""
    return [sys.executable, "-m", "igcv_nas.cli.search", "--address", address, "--space", SMALL,
            "--flops", "4M", "--trials", str(trials), "--max-concurrent", "2",
            "--cpus-per-trial", "1", "--epochs", str(epochs), "--train-fraction", "0.004",
            "--batch-size", "16", "--val-size", "100", "--no-asha", "--quiet",
            "--data-dir", str(cifar_dir), "--run-dir", str(run_dir)]


@pytest.fixture
def two_nodes():
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "resources": {"head": 1}})
    worker = cluster.add_node(num_cpus=1, resources={"worker": 1})
    cluster.wait_for_nodes()
    try:
        yield cluster, {cluster.head_node.node_id, worker.node_id}
    finally:
        cluster.shutdown()


def test_trials_run_on_both_nodes(two_nodes, tmp_path, cifar_dir):
    cluster, node_ids = two_nodes
    d = tmp_path / "run"
    p = subprocess.run(
        _search_cmd(cluster.address, d, cifar_dir, trials=6, epochs=2),
        capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    df = load_trials(d)
    ev = df[df.status == "complete"]
    assert len(ev) == 6
    assert set(ev.node) == node_ids, f"trials ran on {set(ev.node)}, cluster nodes {node_ids}"
    assert pd.read_json(d / "run.json", typ="series")["settings"]["address"] == cluster.address


@pytest.mark.slow
def test_search_completes_when_the_worker_node_is_removed(two_nodes, tmp_path, cifar_dir):
    """Remove the worker node (its raylet and the trial running on it die) after the first trial
    completes: the lost trial is retried on the head node and the search completes."""
    cluster, node_ids = two_nodes
    worker = next(n for n in cluster.worker_nodes)
    d = tmp_path / "run"
    p = subprocess.Popen(
        _search_cmd(cluster.address, d, cifar_dir, trials=5, epochs=3),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_table(d, lambda df: (df.status == "complete").sum() >= 1
                   and (df.status == "running").sum() >= 1, timeout=300)
    cluster.remove_node(worker)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    df = load_trials(d)
    ev = df[df.status.isin(["complete", "pruned", "failed"])]
    assert len(ev) == 5 and (ev.status == "complete").all()
    assert cluster.head_node.node_id in set(ev.node)
