"""Run Optuna's own sampler tests (tests/samplers_tests/ of the installed Optuna version) against
igcv_nas.search.evolution.EvolutionSampler and igcv_nas.search.nsga.ConditionalNSGAII.

    python benchmarks/run_optuna_sampler_tests.py [--sdist optuna-X.Y.Z.tar.gz] [-- PYTEST ARGS]
    python benchmarks/run_optuna_sampler_tests.py \
        --record benchmarks/results/optuna_sampler_tests.json

Optuna's wheel ships no tests, so the sdist of exactly the installed version is fetched from
PyPI with ``pip download optuna==<version> --no-binary :all: --no-deps`` (or read from
``--sdist``), and only ``tests/samplers_tests/*.py`` is extracted into a temporary directory.
``tests/optuna_sampler_suite.py`` imports their modules from there and runs their test
functions and classes with our sampler in place of Optuna's (see its docstring for what applies).
With ``--record FILE`` the counts of pytest's last summary line (passed, skipped, failed,
errors), the Optuna version, the machine, the date and the command are written to FILE as JSON
(the docs' benchmark page is rendered from it). Exit status: pytest's; 3 when the sdist cannot
be obtained (no network, no such version).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "tests" / "optuna_sampler_suite.py"
NO_SDIST = 3


def fetch_sdist(version: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", f"optuna=={version}", "--no-binary",
           ":all:", "--no-deps", "-d", str(dest), "-q"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    found = sorted(dest.glob(f"optuna-{version}.tar.gz"))
    if r.returncode != 0 or not found:
        raise RuntimeError(f"pip download of the optuna {version} sdist failed "
                           f"(rc {r.returncode}): {(r.stderr or r.stdout).strip()[-500:]}")
    return found[0]


def extract_sampler_tests(sdist: Path, version: str, dest: Path) -> Path:
    """Extract tests/samplers_tests/*.py (top level of that folder only) of the sdist."""
    prefix = f"optuna-{version}/tests/samplers_tests/"
    out = dest / "samplers_tests"
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers()
                   if m.isfile() and m.name.startswith(prefix) and m.name.endswith(".py")
                   and "/" not in m.name[len(prefix):]]
        for m in members:
            (out / m.name[len(prefix):]).write_bytes(tar.extractfile(m).read())
    if not (out / "test_samplers.py").is_file():
        raise RuntimeError(f"{sdist.name} has no {prefix}test_samplers.py")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sdist", type=Path, help="a local optuna-<installed version>.tar.gz")
    ap.add_argument("--record", type=Path, metavar="FILE",
                    help="write the counts, versions, machine, date and command as JSON there")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args(argv)

    import optuna
    version = optuna.__version__
    with tempfile.TemporaryDirectory(prefix="optuna-sampler-tests-") as tmp:
        tmp_path = Path(tmp)
        try:
            sdist = args.sdist or fetch_sdist(version, tmp_path)
            if not sdist.name.startswith(f"optuna-{version}."):
                raise RuntimeError(f"{sdist.name} is not the sdist of the installed optuna "
                                   f"{version}")
            tests_dir = extract_sampler_tests(sdist, version, tmp_path / "src")
        except (RuntimeError, OSError, subprocess.TimeoutExpired, tarfile.TarError) as e:
            print(f"cannot obtain Optuna {version}'s sampler tests: {e}", file=sys.stderr)
            return NO_SDIST
        print(f"optuna {version}: tests from {sdist.name} -> {tests_dir}", flush=True)
        ini = tmp_path / "pytest.ini"  # their settings, not the project's (no -m 'not slow')
        ini.write_text("[pytest]\nfilterwarnings =\n"
                       "    ignore::optuna.exceptions.ExperimentalWarning\n"
                       "markers =\n    slow: slow tests\n")
        env = dict(os.environ, IGCV_OPTUNA_TESTS=str(tests_dir))
        env.setdefault("OMP_NUM_THREADS", "1")
        cmd = [sys.executable, "-m", "pytest", "-c", str(ini), "--rootdir", str(ROOT),
               "-p", "no:cacheprovider", "-v", "-rs", str(SUITE), *args.pytest_args]
        if args.record is None:
            return subprocess.run(cmd, env=env, cwd=ROOT).returncode
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from search_efficiency import machine_line  # the benchmarks' one machine line
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        sys.stdout.write(r.stdout)
        sys.stderr.write(r.stderr)
        summary = [ln for ln in r.stdout.splitlines() if re.match(r"^=+ .* in [0-9.]+s", ln)]
        counts = {k: int(n) for n, k in
                  re.findall(r"(\d+) (passed|skipped|failed|errors?|xfailed|xpassed)",
                             summary[-1] if summary else "")}
        record = {"optuna": version, "sdist": sdist.name, **counts, "returncode": r.returncode,
                  "summary": summary[-1].strip("= ") if summary else None,
                  "machine": machine_line(), "started": started,
                  "command": " ".join(["python", "benchmarks/run_optuna_sampler_tests.py",
                                       *(argv if argv is not None else sys.argv[1:])])}
        args.record.write_text(json.dumps(record, indent=1) + "\n")
        print(f"recorded -> {args.record}")
        return r.returncode


if __name__ == "__main__":
    sys.exit(main())
