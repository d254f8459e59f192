"""igcv-report on a real run directory: a tiny real search (local Ray, real CIFAR-10 copy, real
Optuna journal), then the report's files checked against the run's own files. Runs of other
shapes (latencies, a zero-cost score, no complete trials) are made from the real run's rows with
the run store's own API."""
from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.image as mpimg
import pandas as pd
import pytest

from igcv_nas.cli.report import main
from igcv_nas.artifacts.report import load_meta
from igcv_nas.search.runstore import RunDir, load_trials

# nearly every test reads the run of a real Ray search on the CIFAR-10 copy
pytestmark = pytest.mark.integration

SMALL = str(Path(__file__).parent / "spaces" / "small.yaml")
PNG_SHAPE = (600, 960)  # report.FIGSIZE (8 x 5 in) at report.DPI (120)
ALWAYS = {"pareto_macs.png", "progress.png", "trials.csv", "report.md", "report.html"}


@pytest.fixture(scope="module")
def run(tmp_path_factory, cifar_dir):
    """4 trials of the small test space under 4M MACs, 2 epochs each, no ASHA."""
    from igcv_nas.cli.search import main as search
    d = tmp_path_factory.mktemp("report") / "run"
    try:
        rc = search(["--space", SMALL, "--flops", "4M", "--trials", "4", "--epochs", "2",
                     "--train-fraction", "0.002", "--batch-size", "16", "--val-size", "100",
                     "--cpus-per-trial", "1", "--quiet", "--no-asha", "--data-dir", str(cifar_dir),
                     "--run-dir", str(d)])
        assert rc == 0
        yield d
    finally:
        import ray
        ray.shutdown()


@pytest.fixture(scope="module")
def report(run):
    assert main([str(run)]) == 0
    return run / "report"


def section(md: str, title: str) -> str:
    """The text of the ``## title...`` section of a Markdown report."""
    m = re.search(rf"^## {re.escape(title)}.*?$(.*?)(?=^## |\Z)", md, re.M | re.S)
    assert m, f"no section {title!r}"
    return m.group(1)


def table_trials(md_section: str) -> list[int]:
    """Trial numbers (first column) of the Markdown table in a section."""
    rows = [ln for ln in md_section.splitlines() if ln.startswith("|")][2:]  # header, rule
    return [int(r.split("|")[1]) for r in rows]


def complete_by_score(run: Path, score: str = "val_acc") -> list[int]:
    df = load_trials(run)
    done = df[(df.status == "complete") & df[score].notna()]
    return list(done.sort_values([score, "macs", "number"], ascending=[False, True, True],
                                 kind="stable").number)


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.shape[:2] == PNG_SHAPE
    assert img[..., :3].std() > 0.05  # something is drawn, not a blank canvas


def derived_run(tmp_path: Path, run: Path, name: str, rows: list[dict] | None,
                **settings) -> Path:
    """A run directory with the real run's run.json (settings updated) and space, and
    ``rows`` as its trials table (None: no trials.csv yet, as right after creation)."""
    meta = json.loads((run / "run.json").read_text())
    meta.pop("format")
    meta["settings"].update(settings)
    rd = RunDir.create(tmp_path / name, meta, (run / "space.yaml").read_bytes())
    if rows is not None:
        rd.write_results(rows, None, [])
    return rd.path


# ---------------------------------------------------------------------------------------------

def test_writes_every_file_and_nothing_else(report):
    assert {p.name for p in report.iterdir()} == ALWAYS  # no latency here, no temporary files


def test_pngs_are_valid_and_of_the_fixed_size(report):
    for name in ("pareto_macs.png", "progress.png"):
        assert_png(report / name)


def test_report_names_the_best_trial_of_best_json(run, report):
    best = json.loads((run / "best.json").read_text())
    md = (report / "report.md").read_text()
    # no ladder in this run: a single proxy score, said to be one
    assert (f"Best (not confirmed: a single proxy score (no ladder: nothing re-trained with "
            f"other seeds)): trial {best['number']}, val_acc {best['val_acc']:.4f},") in md
    assert f"arch id {best['arch_id']}" in md
    assert table_trials(section(md, "Top"))[0] == best["number"]
    html = (report / "report.html").read_text()
    assert f"trial {best['number']}, val_acc {best['val_acc']:.4f}," in html


def test_top_table_is_in_score_order(run, report):
    md = (report / "report.md").read_text()
    order = complete_by_score(run)
    assert len(order) >= 2
    assert table_trials(section(md, "Top 10 by val_acc")) == order[:10]
    rows = [r for r in section(md, "Top").splitlines() if r.startswith("|")][2:]
    scores = [float(r.split("|")[2]) for r in rows]
    assert len(scores) == len(order[:10])
    assert scores == sorted(scores, reverse=True)


def test_top_k_and_out(run, tmp_path):
    out = tmp_path / "elsewhere" / "rep"
    assert main([str(run), "--top", "2", "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert table_trials(section(md, "Top 2 by val_acc")) == complete_by_score(run)[:2]
    assert {p.name for p in out.iterdir()} == ALWAYS


def test_pareto_table_is_the_runs_front(run, report):
    md = (report / "report.md").read_text()
    front = json.loads((run / "pareto.json").read_text())
    assert table_trials(section(md, "Pareto front")) == [r["number"] for r in front]


def test_trials_csv_equals_the_runs_table(run, report):
    pd.testing.assert_frame_equal(pd.read_csv(report / "trials.csv"),
                                  pd.read_csv(run / "trials.csv"))


def test_settings_counts_and_elapsed(run, report):
    meta = json.loads((run / "run.json").read_text())
    md = (report / "report.md").read_text()
    assert md.startswith(f"# igcv-search report: {run.name}\n")
    s = section(md, "Settings")
    assert f"small (sha256 {meta['space']['sha256'][:12]})" in s
    assert "4.00M (4,000,000)" in s and "| tpe " in s and "scheduler requested: none" in s
    e = meta["engine"]  # what ran, as the search recorded it
    assert e["asha"] is False
    ran = (f"ASHA did not run; {e['proxy_images']:,} proxy training images, "
           f"{e['val_images']:,} validation images, {e['epochs']} epochs = {e['steps']} steps "
           "per trial")
    assert re.search(rf"^\| what ran +\| {re.escape(ran)}(; no ladder)? +\|$", s, re.M), s
    counts = load_trials(run).status.value_counts()
    t = section(md, "Trials")
    assert re.search(rf"^\| complete +\| +{counts['complete']} \|$", t, re.M)
    assert re.search(r"^\| failed +\| +0 \|$", t, re.M)
    assert f"({meta['elapsed_s']:.1f} s)" in md


def test_images_embedded_and_study_note(run, report):
    md = (report / "report.md").read_text()
    html = (report / "report.html").read_text()
    for name in ("pareto_macs.png", "progress.png"):
        assert f"]({name})" in md and f'<img src="{name}"' in html
    assert "pareto_latency.png" not in md
    cmd = f"optuna-dashboard {run / 'study.journal'}"
    assert cmd in md and cmd in html
    assert html.count("<table") == 4  # settings, counts, top, Pareto


def test_python_note_opens_the_study(run, report):
    md = (report / "report.md").read_text()
    code = re.search(r"or in Python:\n\n```\n(.*?)```", md, re.S).group(1)
    ns: dict = {}
    exec(code, ns)  # noqa: S102 - the snippet the report gives its reader
    assert len(ns["study"].trials) == len(load_trials(run))
    assert list(ns["df"].number) == list(load_trials(run).number)


def test_load_trials_dtypes_and_values(run):
    raw, df = pd.read_csv(run / "trials.csv"), load_trials(run)
    assert list(df.columns) == list(raw.columns)
    for c in ("number", "rung", "macs", "params", "attempt"):
        assert str(df[c].dtype) == "Int64"
        assert list(df[c]) == list(raw[c])
    for c in ("val_acc", "best_val_acc", "wall_seconds", "latency_ms", "val_loss", "tse"):
        assert pd.api.types.is_float_dtype(df[c])
    pd.testing.assert_series_equal(df.val_acc, raw.val_acc.astype(float))
    for c in ("started", "finished"):
        assert pd.api.types.is_datetime64_any_dtype(df[c])
        assert list(df[c]) == list(pd.to_datetime(raw[c]))
    assert pd.api.types.is_string_dtype(df.status) and set(df.status) <= {
        "complete", "pruned", "failed", "over-budget", "below-band", "duplicate"}
    assert (df.finished >= df.started).all()
    assert load_meta(run) == json.loads((run / "run.json").read_text())


def test_latency_plot_when_the_run_has_latencies(run, tmp_path):
    rows = load_trials(run).to_dict("records")
    for r in rows:
        r["latency_ms"] = round(r["macs"] / 1e6 * 2.5, 4)
    best = complete_by_score(run)[0]
    next(r for r in rows if r["number"] == best)["measured_latency_ms"] = 7.25
    d = derived_run(tmp_path, run, "lat", rows, latency_ms=9.0)
    assert main([str(d)]) == 0
    rep = d / "report"
    assert {p.name for p in rep.iterdir()} == ALWAYS | {"pareto_latency.png"}
    assert_png(rep / "pareto_latency.png")
    md = (rep / "report.md").read_text()
    assert "](pareto_latency.png)" in md and "9 ms on cpu" in md
    rows_md = [[c.strip() for c in ln.split("|")[1:-1]]
               for ln in section(md, "Top").splitlines() if ln.startswith("|")]
    header, cells = rows_md[0], {int(r[0]): r for r in rows_md[2:]}
    lat = header.index("latency ms")
    assert cells[best][lat] == "7.25"  # measured latency preferred to the predicted one
    other = next(n for n in cells if n != best)
    macs = load_trials(run).set_index("number").macs[other]
    assert cells[other][lat] == f"{macs / 1e6 * 2.5:.2f}"


def test_zero_cost_run_scores_by_its_metric(run, tmp_path):
    rows = load_trials(run).to_dict("records")
    for r in rows:  # a score that ranks the trials in another order than val_acc
        r["zc_naswot"] = float(1000 - 7 * r["number"])
    d = derived_run(tmp_path, run, "zc", rows, proxy="zero-cost", zero_cost_metric="naswot")
    assert main([str(d)]) == 0
    md = (d / "report" / "report.md").read_text()
    order = complete_by_score(d, "zc_naswot")
    assert order == sorted(order)
    assert table_trials(section(md, "Top 10 by zc_naswot")) == order
    assert f"Best (not confirmed): trial {order[0]}, zc_naswot {1000 - 7 * order[0]:.4f}," in md


@pytest.mark.parametrize("shape", ["no-trials-yet", "all-pruned"])
def test_run_without_complete_trials_still_renders(run, tmp_path, shape):
    rows = None
    if shape == "all-pruned":
        rows = [{**r, "status": "pruned"} for r in load_trials(run).to_dict("records")]
    d = derived_run(tmp_path, run, shape, rows)
    assert main([str(d)]) == 0
    rep = d / "report"
    assert {p.name for p in rep.iterdir()} == ALWAYS
    for name in ("pareto_macs.png", "progress.png"):
        assert_png(rep / name)
    md = (rep / "report.md").read_text()
    assert "No complete trials yet." in section(md, "Best")
    assert "No complete trials yet." in section(md, "Pareto front")
    assert len(pd.read_csv(rep / "trials.csv")) == (0 if rows is None else len(rows))


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("igcv-report: error: "), err
    return err[0]


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(run, tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main([str(missing)]) == 2
    assert "does not exist" in _one_error_line(capsys) and not missing.exists()

    plain = tmp_path / "plain"
    plain.mkdir()
    assert main([str(plain)]) == 2
    assert "no run.json" in _one_error_line(capsys) and list(plain.iterdir()) == []

    out = tmp_path / "out"
    assert main([str(run), "--top", "0", "--out", str(out)]) == 2
    assert "--top 0" in _one_error_line(capsys) and not out.exists()

    afile = tmp_path / "afile"
    afile.write_text("keep")
    assert main([str(run), "--out", str(afile)]) == 2
    assert "not a folder" in _one_error_line(capsys) and afile.read_text() == "keep"

    bad = derived_run(tmp_path, run, "bad", None)
    (bad / "trials.csv").write_text("a,b\n1,2\n")
    assert main([str(bad)]) == 2
    assert "not a trials table" in _one_error_line(capsys) and not (bad / "report").exists()

    with pytest.raises(SystemExit) as e:
        main([str(run), "--top", "many"])
    assert e.value.code == 2
    assert "--top" in _one_error_line(capsys)


def test_old_run_without_engine_record_says_it_is_unknown(run, tmp_path):
    meta = json.loads((run / "run.json").read_text())
    meta.pop("format")
    meta.pop("engine", None)
    meta["settings"].pop("scheduler", None)
    meta["settings"]["asha"] = True  # asked for, but an old run does not say whether it ran
    rd = RunDir.create(tmp_path / "old", meta, (run / "space.yaml").read_bytes())
    rd.write_results(load_trials(run).to_dict("records"), None, [])
    assert main([str(rd.path)]) == 0
    s = section((rd.path / "report" / "report.md").read_text(), "Settings")
    assert re.search(r"^\| what ran +\| not recorded in run.json \(written by an older version\): "
                     r"whether ASHA ran, and with how many images, is unknown +\|$", s, re.M), s
    assert "| ASHA ran" not in s and "ASHA requested" in s


def test_engine_text_of_a_ladder_and_of_asha():
    from igcv_nas.artifacts.report import engine_text
    e = {"proxy": "training", "asha": True, "proxy_images": 4500, "val_images": 1000,
         "epochs": 5, "steps": 85, "ladder": [
             {"name": "screen", "keep": 10, "factor": 1, "seeds": [0]},
             {"name": "confirm", "keep": 3, "factor": 4, "seeds": [0, 1]}]}
    assert engine_text({"engine": e}) == (
        "ASHA ran; 4,500 proxy training images, 1,000 validation images, 5 epochs = 85 steps "
        "per trial; ladder of 2 rungs: screen (keep 10, x1 budget, 1 seed(s)), confirm (keep 3, "
        "x4 budget, 2 seed(s))")
    z = {"proxy": "zero-cost", "asha": False, "proxy_images": 0, "val_images": 0, "epochs": 0,
         "steps": 0, "ladder": None}
    assert engine_text({"engine": z}) == ("ASHA did not run; no training (zero-cost proxy); "
                                          "no ladder")


@pytest.mark.parametrize("score,ylabel", [("val_acc", "val acc (fraction)"),
                                           ("zc_synflow", "zc_synflow (log10)"),
                                           ("zc_naswot", "zc_naswot (ln |det K|)")])
def test_every_plot_axis_has_a_unit(run, score, ylabel):
    from igcv_nas.artifacts.report import pareto_figure, progress_figure, with_latency
    df = with_latency(load_trials(run))
    if score not in df.columns:
        df[score] = df["val_acc"]
    axes = {"macs": pareto_figure(df, score, "macs", 4e6).axes[0],
            "latency": pareto_figure(df, score, "latency", None).axes[0],
            "progress": progress_figure(df, score).axes[0]}
    assert axes["macs"].get_xlabel() == "MACs (M, millions of multiply-accumulates at batch 1)"
    assert axes["latency"].get_xlabel() == "latency (ms; measured where available, else predicted)"
    assert axes["progress"].get_xlabel().startswith("trial number (count, study order")
    assert {ax.get_ylabel() for ax in axes.values()} == {ylabel}


# ---------------------------------------------------------------------------------------------
# from Python: igcv_nas.artifacts.report.write_report gives the command's guarantees


def test_write_report_refuses_what_the_cli_refuses_with_its_message(run, tmp_path, capsys):
    from igcv_nas.errors import IGCVError
    from igcv_nas.artifacts.report import write_report
    afile = tmp_path / "afile"
    afile.write_text("keep")
    plain = tmp_path / "plain"
    plain.mkdir()
    cases = [((str(run), None, 0), ["--top", "0"]),
             ((str(run), str(afile), 10), ["--out", str(afile)]),
             ((str(tmp_path / "nope"), None, 10), None),
             ((str(plain), None, 10), None)]
    for (run_dir, out, top), extra in cases:
        argv = [run_dir, *(extra or [])]
        assert main(argv) == 2
        expected = _one_error_line(capsys).removeprefix("igcv-report: error: ")
        with pytest.raises(IGCVError) as e:
            write_report(run_dir, out, top)
        assert " ".join(str(e.value).split()) == expected
    assert afile.read_text() == "keep" and list(plain.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "plain"]


def test_write_report_writes_what_the_cli_writes(run, report, tmp_path):
    from igcv_nas.artifacts.report import write_report
    paths = write_report(run, tmp_path / "rep")
    assert [p.parent for p in paths] == [tmp_path / "rep"] * len(paths)
    assert {p.name for p in paths} == {p.name for p in report.iterdir()}
    for name in ("trials.csv", "report.md"):
        assert (tmp_path / "rep" / name).read_text() == (report / name).read_text()


def test_a_file_that_cannot_be_written_is_one_line(run, tmp_path, capsys):
    from igcv_nas.artifacts.report import ReportWriteError, write_report
    out = tmp_path / "rep"
    (out / "report.md").mkdir(parents=True)  # a folder where a file goes
    assert main([str(run), "--out", str(out)]) == 2
    expected = _one_error_line(capsys).removeprefix("igcv-report: error: ")
    assert expected.startswith(f"cannot write the report into {out}: ")
    with pytest.raises(ReportWriteError) as e:
        write_report(run, out)
    def tmp(text: str) -> str:  # the temporary file's random part differs between the two
        return re.sub(r"\.report\.md\.\w+\.tmp", ".report.md.*.tmp", text)
    assert tmp(" ".join(str(e.value).split())) == tmp(expected)
    assert isinstance(e.value, OSError)


def test_a_run_that_lost_its_trials_csv_is_refused_not_reported_as_empty(run, tmp_path,
                                                                          capsys):
    import shutil
    lost = tmp_path / "lost"
    shutil.copytree(run, lost, ignore=shutil.ignore_patterns("report"))
    (lost / "trials.csv").unlink()
    assert main([str(lost)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"igcv-report: error: {lost / 'trials.csv'} does not exist, but the run has "
                   f"recorded trials (a resume of the search rewrites it from the study); "
                   f"nothing to report"]
    assert not (lost / "report").exists()
