"""A trial's checkpoint in an S3-compatible store (moto's server, its own process) continues on
another node after its first node is killed.

The cluster (``ray.cluster_utils.Cluster``: a head with no CPU and two 1-CPU worker nodes, each
its own raylet) is started *without* the store's AWS_* variables: only the driver has them, and
the search hands them to its workers (the job's runtime_env), as a user's driver on a laptop
would to a cluster that has no credentials of its own."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from igcv_nas.search.runstore import load_trials

from .test_reliability import _cmdline, _descendants

# the fixtures: s3_endpoint
pytest_plugins = ["tests.services"]

pytestmark = pytest.mark.integration

SMALL = str(Path(__file__).parent / "spaces" / "small.yaml")


@pytest.fixture
def blind_cluster(monkeypatch):
    """Head without CPUs and two 1-CPU worker nodes, started with no AWS_* variable."""
    from ray.cluster_utils import Cluster
    for k in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(k)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        yield cluster, workers
    finally:
        cluster.shutdown()


def _raylet_pid(node) -> int:
    from ray._private import ray_constants
    return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid


def test_a_trial_continues_from_its_s3_checkpoint_on_another_node(blind_cluster, s3_endpoint,
                                                                  tmp_path, cifar_dir):
    cluster, workers = blind_cluster
    prefix = f"runs/{uuid.uuid4().hex[:8]}"
    storage = s3_endpoint.uri(prefix)
    d = tmp_path / "run"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
           **s3_endpoint.env}
    p = subprocess.Popen(
        [sys.executable, "-m", "igcv_nas.cli.search", "--address", cluster.address,
         "--space", SMALL, "--flops", "4M", "--trials", "1", "--seed", "3", "--epochs", "8",
         "--train-fraction", "0.02", "--batch-size", "16", "--val-size", "100",
         "--scheduler", "none", "--quiet", "--storage-path", storage, "--data-dir",
         str(cifar_dir), "--run-dir", str(d)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # the first checkpoint in the store, then the node whose raylet runs the trial is removed
    by_raylet = {_raylet_pid(w): w for w in workers}
    victim = None
    deadline = time.time() + 600
    while victim is None and time.time() < deadline and p.poll() is None:
        if any(k.endswith("/checkpoint.pt") for k in s3_endpoint.keys(prefix + "/")):
            for pid in _descendants(os.getpid()):
                if "ImplicitFunc" in _cmdline(pid):
                    ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                    victim = by_raylet.get(ppid)
                    if victim is not None:
                        break
        time.sleep(0.2)
    if victim is None:
        p.kill()
        out, err = p.communicate()
        raise AssertionError(f"no trial checkpointed into the store while running: {err[-3000:]}")
    killed = victim.node_id
    cluster.remove_node(victim)
    out, err = p.communicate(timeout=900)
    assert p.returncode == 0, err[-3000:] + out[-2000:]
    df = load_trials(d)
    ran = df[df.node.notna()].reset_index()
    assert len(ran) == 1 and ran.status[0] == "complete"
    other = next(w.node_id for w in workers if w is not victim)
    assert ran.node[0] == f"{killed};{other}"  # every node it ran on, in order
    assert ran.retries[0] == 1 and ran.resumed_in[0] == 1  # continued from the S3 checkpoint
    assert "trial checkpoints off" not in out
