"""Real servers for the test suite, started by the tests themselves: a throwaway PostgreSQL (for
Optuna drivers sharing one study) and moto's S3 server in its own process (for Ray Tune storing
trial checkpoints in an S3-compatible store). Nothing is mocked: clients talk to real servers over
TCP on 127.0.0.1.

Use the fixtures from a test module with ``from .services import postgres_url, s3_endpoint``
(``# noqa: F401``), or register the whole module with ``pytest_plugins = ["tests.services"]`` in
the top-level conftest.

* ``postgres_server`` (session): a :class:`PostgresServer` (host, port, user, data dir, ``url``).
* ``postgres_url`` (session): its SQLAlchemy URL, ``postgresql+psycopg2://postgres@127.0.0.1:PORT/
  postgres``, which ``optuna.create_study(storage=...)`` takes as is.
* ``postgres_db_url`` (function): the URL of a fresh, empty database made for the one test.
* ``s3_endpoint`` (session): an :class:`S3Endpoint` (``endpoint_url``, ``bucket``, ``env``, and
  helpers ``uri()``, ``filesystem()``, ``client()``, ``new_bucket()``).
* ``s3_env`` (function): ``s3_endpoint`` with its ``env`` applied to ``os.environ`` for the test.

The PostgreSQL binaries come from Debian's ``postgresql`` package (``/usr/lib/postgresql/*/bin``),
from ``$IGCV_PG_BINDIR`` or from ``PATH``; without them the fixtures skip. PostgreSQL refuses to
run as root, so as root the server runs as the ``nobody`` user, in a data dir handed to it.
"""
from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0  # bound on waiting for a server to answer; never asserted on
STOP_TIMEOUT_S = 30.0
_STARTS = 3  # tries, each on a newly picked free port (another process may take the first one)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "<no log>"


def _stop(proc: subprocess.Popen, sig: int) -> None:
    """Ask a server to stop with ``sig``; kill it when it has not gone within the bound."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


def _traversable(path: Path) -> bool:
    """Every folder from / down to ``path`` lets other users through (o+x)."""
    p = path.resolve()
    for d in [p, *p.parents]:
        try:
            if not os.stat(d).st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------------- PostgreSQL


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    dbname: str
    datadir: Path
    driver: str = "psycopg2"

    def url_for(self, dbname: str) -> str:
        return f"postgresql+{self.driver}://{self.user}@{self.host}:{self.port}/{dbname}"

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the default database (Optuna's ``storage=``)."""
        return self.url_for(self.dbname)

    def connect(self, dbname: str | None = None) -> Any:
        """A psycopg2 connection (autocommit) to ``dbname`` (default: the default database)."""
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                dbname=dbname or self.dbname, connect_timeout=5)
        conn.autocommit = True
        return conn

    def create_database(self, name: str | None = None) -> str:
        """Make a new empty database; returns its SQLAlchemy URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name must be alphanumeric/underscore: {name!r}")
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url_for(name)


def find_postgres_bindir() -> tuple[Path | None, str]:
    """The folder holding ``initdb`` and ``postgres``, and where the search looked."""
    cands: list[Path] = []
    env = os.environ.get("IGCV_PG_BINDIR")
    if env:
        cands.append(Path(env))

    def _ver(p: str) -> tuple[int, ...]:
        v = Path(p).parent.name
        return tuple(int(x) for x in v.split(".") if x.isdigit()) or (0,)

    cands += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_ver,
                                      reverse=True)]
    on_path = shutil.which("initdb")
    if on_path:
        cands.append(Path(os.path.realpath(on_path)).parent)
    for d in cands:
        if (d / "initdb").is_file() and (d / "postgres").is_file():
            return d, ""
    where = ", ".join(str(c) for c in cands) or "none found"
    return None, (f"no PostgreSQL server binaries (initdb + postgres) in $IGCV_PG_BINDIR, "
                  f"/usr/lib/postgresql/*/bin or PATH (looked at: {where}); "
                  f"install Debian's package: apt-get install -y postgresql")


def _run_as() -> tuple[dict[str, Any], int | None, int | None]:
    """subprocess kwargs running the server as a non-root user when we are root, and its ids."""
    if os.geteuid() != 0:
        return {}, None, None
    try:
        pw = pwd.getpwnam(os.environ.get("IGCV_PG_USER", "nobody"))
    except KeyError:
        pytest.skip("running as root and no 'nobody' user to run PostgreSQL as "
                    "(set IGCV_PG_USER to an unprivileged user)")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}, pw.pw_uid, pw.pw_gid


def _base_dir(prefix: str, need_traversable: bool) -> Path:
    """A new temp folder; one other users can reach when the server runs as another user."""
    roots = [Path(tempfile.gettempdir()), Path("/tmp"), Path("/dev/shm"), Path("/var/tmp")]
    for root in roots:
        if root.is_dir() and (not need_traversable or _traversable(root)):
            with contextlib.suppress(OSError):
                return Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    pytest.fail(f"no temp folder that the PostgreSQL user can reach (tried {roots})")


def _wait_postgres(server: PostgresServer, proc: subprocess.Popen, log: Path) -> str | None:
    """Poll a connection until the server answers; None when up, else why not."""
    import psycopg2

    deadline = time.monotonic() + START_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"postgres exited with {proc.returncode}:\n{_tail(log)}"
        try:
            conn = psycopg2.connect(host=server.host, port=server.port, user=server.user,
                                    dbname=server.dbname, connect_timeout=2)
        except psycopg2.OperationalError as e:
            last = str(e).strip()
            time.sleep(0.2)
            continue
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchone()
        finally:
            conn.close()
        return None
    return (f"postgres did not accept connections within {START_TIMEOUT_S:.0f}s "
            f"(last error: {last}):\n{_tail(log)}")


@contextlib.contextmanager
def run_postgres() -> Iterator[PostgresServer]:
    """Start a throwaway PostgreSQL on 127.0.0.1 at a free port; stop and remove it after."""
    pytest.importorskip("psycopg2", reason="psycopg2 (psycopg2-binary) is needed for PostgreSQL")
    bindir, why = find_postgres_bindir()
    if bindir is None:
        pytest.skip(why)
    as_user, uid, gid = _run_as()
    base = _base_dir("igcv-pg-", need_traversable=uid is not None)
    datadir, log = base / "data", base / "postgres.log"
    if uid is not None:
        os.chown(base, uid, gid)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(HOME=str(base), LC_ALL="C", LANG="C", TZ="UTC")
    proc: subprocess.Popen | None = None
    try:
        init = subprocess.run(
            [str(bindir / "initdb"), "-D", str(datadir), "-U", "postgres", "-A", "trust",
             "-E", "UTF8", "--no-locale", "--no-sync"],
            cwd=base, env=env, capture_output=True, text=True, timeout=120, **as_user)
        if init.returncode != 0:
            pytest.fail(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
        for _ in range(_STARTS):
            server = PostgresServer(HOST, free_port(), "postgres", "postgres", datadir)
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    [str(bindir / "postgres"), "-D", str(datadir), "-h", HOST,
                     "-p", str(server.port), "-k", str(base),
                     "-c", "fsync=off", "-c", "synchronous_commit=off",
                     "-c", "full_page_writes=off", "-c", "max_connections=200"],
                    cwd=base, env=env, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, **as_user)
            if uid is not None:
                with contextlib.suppress(OSError):
                    os.chown(log, uid, gid)
            atexit.register(_stop, proc, signal.SIGQUIT)
            err = _wait_postgres(server, proc, log)
            if err is None:
                break
            _stop(proc, signal.SIGQUIT)
            if "could not bind" not in err and "in use" not in err:
                pytest.fail(f"PostgreSQL from {bindir} did not start: {err}")
        else:
            pytest.fail(f"PostgreSQL from {bindir} did not start on {_STARTS} ports: {err}")
        yield server
    finally:
        if proc is not None:
            _stop(proc, signal.SIGINT)  # "fast" shutdown: ends open sessions
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with run_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """SQLAlchemy URL of a real PostgreSQL database, for ``optuna.create_study(storage=...)``.
    Shared by the whole session: give each study its own name (or use ``postgres_db_url``)."""
    return postgres_server.url


@pytest.fixture
def postgres_db_url(postgres_server: PostgresServer) -> str:
    """SQLAlchemy URL of a fresh, empty database on the session's server, for one test."""
    return postgres_server.create_database()


# ----------------------------------------------------------------------------------------- S3


@dataclass(frozen=True)
class S3Endpoint:
    endpoint_url: str  # http://127.0.0.1:PORT
    bucket: str
    region: str = "us-east-1"
    access_key: str = "testing"
    secret_key: str = "testing"
    env: dict[str, str] = field(default_factory=dict)  # AWS_* for boto3, pyarrow and Ray workers

    @property
    def host_port(self) -> str:
        return self.endpoint_url.split("://", 1)[1]

    def uri(self, key: str = "", bucket: str | None = None) -> str:
        """``s3://BUCKET/key``."""
        return f"s3://{bucket or self.bucket}/{key.lstrip('/')}".rstrip("/")

    def filesystem(self) -> Any:
        """A ``pyarrow.fs.S3FileSystem`` on this endpoint (explicit: needs no env vars)."""
        from pyarrow import fs

        return fs.S3FileSystem(access_key=self.access_key, secret_key=self.secret_key,
                               region=self.region, endpoint_override=self.endpoint_url)

    def client(self) -> Any:
        """A boto3 S3 client on this endpoint (explicit: needs no env vars)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region,
                            aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key)

    def new_bucket(self, name: str | None = None) -> str:
        """Create another bucket (e.g. one per test); returns its name."""
        name = name or f"b-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, prefix: str = "", bucket: str | None = None) -> list[str]:
        """Every object key under ``prefix`` in the bucket."""
        pages = self.client().get_paginator("list_objects_v2").paginate(
            Bucket=bucket or self.bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _wait_http(url: str, proc: subprocess.Popen, log: Path) -> str | None:
    deadline = time.monotonic() + START_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"moto server exited with {proc.returncode}:\n{_tail(log)}"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return None
                last = f"HTTP {r.status}"
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        time.sleep(0.2)
    return (f"moto server did not answer {url} within {START_TIMEOUT_S:.0f}s (last: {last}):\n"
            f"{_tail(log)}")


@contextlib.contextmanager
def run_s3(bucket: str = "igcv-test") -> Iterator[S3Endpoint]:
    """moto's S3 server as its own process on 127.0.0.1 at a free port, with ``bucket`` made."""
    pytest.importorskip("moto.server", reason="moto[server] is needed for the S3 endpoint")
    pytest.importorskip("boto3", reason="boto3 is needed for the S3 endpoint")
    base = Path(tempfile.mkdtemp(prefix="igcv-s3-"))
    log = base / "moto.log"
    proc: subprocess.Popen | None = None
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    try:
        for _ in range(_STARTS):
            port = free_port()
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
                    cwd=base, env=env, stdout=out, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True)
            atexit.register(_stop, proc, signal.SIGKILL)
            endpoint = f"http://{HOST}:{port}"
            err = _wait_http(endpoint + "/moto-api/data.json", proc, log)
            if err is None:
                break
            _stop(proc, signal.SIGKILL)
            if "in use" not in err:
                pytest.fail(f"moto S3 server did not start: {err}")
        else:
            pytest.fail(f"moto S3 server did not start on {_STARTS} ports: {err}")
        s3 = S3Endpoint(endpoint_url=endpoint, bucket=bucket, env={
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            # never ask the EC2 metadata address for credentials or a region
            "AWS_EC2_METADATA_DISABLED": "true",
            # no user's ~/.aws config or profile leaks in (these files do not exist)
            "AWS_CONFIG_FILE": str(base / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(base / "aws-credentials"),
        })
        s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        if proc is not None:
            _stop(proc, signal.SIGTERM)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """A real S3-compatible server (moto, own process) with a bucket; see :class:`S3Endpoint`.
    Its ``env`` makes boto3 and ``pyarrow.fs`` (``s3://`` URIs) use it; apply it before
    ``ray.init`` or pass it as ``runtime_env={"env_vars": s3_endpoint.env}``."""
    with run_s3() as s3:
        yield s3


@pytest.fixture
def s3_env(s3_endpoint: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> S3Endpoint:
    """``s3_endpoint`` with its AWS_* env vars set in ``os.environ`` for this one test."""
    for k in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(k)
    for k, v in s3_endpoint.env.items():
        monkeypatch.setenv(k, v)
    return s3_endpoint
