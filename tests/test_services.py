"""The servers of tests/services.py are real: PostgreSQL shared by two Optuna driver processes,
and moto's S3 server reached by pyarrow and boto3, from this process and from others, and used
by Ray Tune as its storage for trial checkpoints."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .services import S3Endpoint

# the fixtures: postgres_server, postgres_url, postgres_db_url, s3_endpoint, s3_env
pytest_plugins = ["tests.services"]

pytestmark = pytest.mark.integration

SUBPROCESS_TIMEOUT_S = 300  # a bound against hangs only; nothing asserts on durations

DRIVER = textwrap.dedent("""
    import os, sys
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    study = optuna.create_study(storage=url, study_name=name, load_if_exists=True)
    def objective(trial):
        trial.set_user_attr("driver", os.getpid())
        return trial.suggest_float("x", -1.0, 1.0) ** 2
    study.optimize(objective, n_trials=n)
    print(os.getpid())
""")


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True,
                          timeout=SUBPROCESS_TIMEOUT_S)


def test_postgres_url_is_a_real_server(postgres_server, postgres_url):
    assert postgres_url.startswith("postgresql+psycopg2://")
    assert f"@127.0.0.1:{postgres_server.port}/" in postgres_url
    conn = postgres_server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT version()")
            assert cur.fetchone()[0].startswith("PostgreSQL")
    finally:
        conn.close()


def test_two_optuna_drivers_share_one_study(postgres_db_url, postgres_server):
    import optuna

    name = f"shared-{uuid.uuid4().hex[:8]}"
    # the parent makes the schema and the study first: two processes creating Optuna's tables
    # in an empty database at the same moment can collide in PostgreSQL's catalog
    optuna.create_study(storage=postgres_db_url, study_name=name)
    n = 6
    procs = [subprocess.Popen([sys.executable, "-c", DRIVER, postgres_db_url, name, str(n)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    pids = set()
    for p in procs:
        out, err = p.communicate(timeout=SUBPROCESS_TIMEOUT_S)
        assert p.returncode == 0, err
        pids.add(int(out.split()[-1]))
    assert len(pids) == 2

    study = optuna.load_study(study_name=name, storage=postgres_db_url)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 2 * n
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert {t.user_attrs["driver"] for t in trials} == pids
    assert sorted(t.number for t in trials) == list(range(2 * n))
    # the rows are in PostgreSQL itself
    dbname = postgres_db_url.rsplit("/", 1)[1]
    conn = postgres_server.connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM trials t JOIN studies s ON s.study_id = t.study_id "
                        "WHERE s.study_name = %s AND t.state = 'COMPLETE'", (name,))
            assert cur.fetchone()[0] == 2 * n
    finally:
        conn.close()


def test_postgres_db_url_is_fresh(postgres_db_url):
    import optuna

    assert optuna.get_all_study_names(storage=postgres_db_url) == []


def test_s3_filesystem_roundtrip(s3_endpoint: S3Endpoint):
    f = s3_endpoint.filesystem()
    key = f"roundtrip/{uuid.uuid4().hex}.bin"
    with f.open_output_stream(f"{s3_endpoint.bucket}/{key}") as out:
        out.write(b"\x00igcv\xff" * 1000)
    with f.open_input_stream(f"{s3_endpoint.bucket}/{key}") as inp:
        assert inp.read() == b"\x00igcv\xff" * 1000
    # another client, same server
    assert key in s3_endpoint.keys("roundtrip/")
    body = s3_endpoint.client().get_object(Bucket=s3_endpoint.bucket, Key=key)["Body"].read()
    assert body == b"\x00igcv\xff" * 1000


def test_s3_from_uri_with_env_vars_only(s3_env: S3Endpoint):
    from pyarrow import fs

    key = f"from-uri/{uuid.uuid4().hex}/x.txt"
    f, path = fs.FileSystem.from_uri(s3_env.uri(key))  # endpoint from AWS_ENDPOINT_URL
    assert isinstance(f, fs.S3FileSystem)
    assert path == f"{s3_env.bucket}/{key}"
    with f.open_output_stream(path) as out:
        out.write(b"hello")
    assert s3_env.keys("from-uri/") == [key]
    # a bare S3FileSystem() does not read AWS_ENDPOINT_URL: pass it as endpoint_override
    g = fs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"])
    with g.open_input_stream(path) as inp:
        assert inp.read() == b"hello"


def test_s3_reachable_from_another_process_with_env_only(s3_endpoint: S3Endpoint):
    key = f"xproc/{uuid.uuid4().hex}.txt"
    s3_endpoint.client().put_object(Bucket=s3_endpoint.bucket, Key=key, Body=b"from parent")
    script = textwrap.dedent("""
        import sys
        import boto3
        from pyarrow import fs
        bucket, key = sys.argv[1], sys.argv[2]
        body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        f, path = fs.FileSystem.from_uri(f"s3://{bucket}/{key}.copy")
        with f.open_output_stream(path) as out:
            out.write(body + b" via child")
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(s3_endpoint.env)
    r = _run([sys.executable, "-c", script, s3_endpoint.bucket, key], env=env)
    assert r.returncode == 0, r.stderr
    got = s3_endpoint.client().get_object(Bucket=s3_endpoint.bucket, Key=key + ".copy")
    assert got["Body"].read() == b"from parent via child"


TUNE = textwrap.dedent("""
    import json, os, sys, tempfile
    import ray
    from ray import tune

    def trainable(config):
        ckpt = tune.get_checkpoint()
        start = 0
        if ckpt is not None:
            with ckpt.as_directory() as d:
                with open(os.path.join(d, "state.json")) as f:
                    start = json.load(f)["step"] + 1
        for step in range(start, 3):
            with tempfile.TemporaryDirectory() as d:
                with open(os.path.join(d, "state.json"), "w") as f:
                    json.dump({"step": step}, f)
                tune.report({"step": step, "resumed_from": start},
                            checkpoint=tune.Checkpoint.from_directory(d))
            if ckpt is None and step == 0:
                raise RuntimeError("fails once, after its first checkpoint")

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    grid = tune.Tuner(trainable, run_config=tune.RunConfig(
        name="exp", storage_path=sys.argv[1],
        failure_config=tune.FailureConfig(max_failures=1))).fit()
    r = grid[0]
    print("RESULT " + json.dumps({"error": repr(r.error) if r.error else None,
                                  "step": r.metrics["step"],
                                  "resumed_from": r.metrics["resumed_from"],
                                  "fs": r.checkpoint.filesystem.type_name,
                                  "path": r.checkpoint.path}))
    ray.shutdown()
""")


def test_ray_tune_checkpoints_in_s3_and_restores_on_retry(s3_endpoint: S3Endpoint):
    """Ray Tune takes storage_path="s3://..." with the AWS_* env vars alone (set before
    ray.init, so its workers have them too); the retry gets the checkpoint back from S3."""
    pytest.importorskip("ray.tune")
    prefix = f"tune-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update(s3_endpoint.env)
    env["RAY_DEDUP_LOGS"] = "0"
    r = _run([sys.executable, "-c", TUNE, s3_endpoint.uri(prefix)], env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT "):])
    assert res["error"] is None
    assert res["step"] == 2 and res["resumed_from"] == 1  # restored checkpoint_000000
    assert res["fs"] == "s3" and res["path"].startswith(f"{s3_endpoint.bucket}/{prefix}/exp/")
    keys = s3_endpoint.keys(f"{prefix}/exp/")
    for i in range(3):
        assert any(k.endswith(f"/checkpoint_{i:06d}/state.json") for k in keys), keys
