"""igcv-export: self-contained spec JSON, weights, TorchScript, ONNX, each verified."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from igcv_nas.arch import cost, zoo
from igcv_nas.cli.export import main
from igcv_nas.artifacts.export import ExportError, export, verify
from igcv_nas.search.runstore import load_trials
from igcv_nas.arch.spec import from_dict

SMALL = str(Path(__file__).parent / "spaces" / "small.yaml")


@pytest.fixture(scope="module")
def small_net():
    return zoo.get("igcv3_d_0.25_cifar")


@pytest.fixture(scope="module")
def exported(small_net, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "net"
    rep = export(small_net, out, provenance={"source": "test"})
    return out, rep


@pytest.mark.integration
def test_all_artifacts_written_and_verified(exported, small_net):
    out, rep = exported
    assert sorted(p.name for p in out.iterdir()) == [
        "model.onnx", "model.torchscript.pt", "spec.json", "verify.json", "weights.pt"]
    assert rep["ok"] and json.loads((out / "verify.json").read_text()) == rep
    checks = {c["check"]: c for c in rep["checks"]}
    assert set(checks) == {"arch_id", "weights_arch_id", "outputs_informative", "rebuilt_outputs",
                           "fvcore_macs", "torchscript_outputs", "onnx_checker", "onnx_outputs"}
    assert checks["fvcore_macs"]["fvcore"] == cost.count(small_net).macs
    assert checks["rebuilt_outputs"]["max_abs_diff"] <= 1e-5
    assert checks["onnx_outputs"]["max_abs_diff"] <= 1e-4
    assert checks["outputs_informative"]["output_std"] > 1e-2


@pytest.mark.integration
def test_spec_json_is_self_contained(exported, small_net):
    out, _ = exported
    doc = json.loads((out / "spec.json").read_text())
    assert doc["format"] == "igcv-nas/export@1" and doc["arch_id"] == small_net.arch_id
    assert from_dict(doc["spec"]) == small_net
    c = cost.count(small_net)
    got = (doc["cost"]["macs"], doc["cost"]["flops"], doc["cost"]["params"])
    assert got == (c.macs, 2 * c.macs, c.params)
    assert doc["complementary"] == "relaxed"  # IGCV3 blocks
    # explicit group sizes and permutation indices, not scheme names
    blocks = [b for st in doc["spec"]["stages"] for b in st]
    perms = [b["perm_expand"] for b in blocks if b.get("perm_expand") is not None]
    assert perms and all(isinstance(p, list) and sorted(p) == list(range(len(p))) for p in perms)
    assert all(isinstance(g, list) for b in blocks for g in b["expand_groups"])
    assert doc["provenance"]["source"] == "test"
    assert set(doc["provenance"]["exported_with"]) == {"igcv_nas", "torch", "python"}
    assert len(doc["reference"]["output"]) == 2 and len(doc["reference"]["output"][0]) == 10


@pytest.mark.integration
def test_verify_from_the_files_alone_and_a_tampered_spec_fails(exported, tmp_path):
    out, _ = exported
    assert verify(out)["ok"]
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in out.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    doc = json.loads((bad / "spec.json").read_text())
    b = next(b for st in doc["spec"]["stages"] for b in st if b.get("perm_expand"))
    p = b["perm_expand"]
    p[0], p[1] = p[1], p[0]  # a wrong permutation: same MACs, different function
    doc["arch_id"] = from_dict(doc["spec"]).arch_id
    (bad / "spec.json").write_text(json.dumps(doc))
    with pytest.raises(ExportError, match="weights_arch_id|rebuilt_outputs"):
        verify(bad)
    assert json.loads((bad / "verify.json").read_text())["ok"] is False


@pytest.mark.integration
def test_a_wrong_mac_count_fails_verification(exported, tmp_path):
    out, _ = exported
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "spec.json").write_text((out / "spec.json").read_text())
    (bad / "weights.pt").write_bytes((out / "weights.pt").read_bytes())
    doc = json.loads((bad / "spec.json").read_text())
    doc["cost"]["macs"] += 1
    (bad / "spec.json").write_text(json.dumps(doc))
    with pytest.raises(ExportError, match="fvcore_macs"):
        verify(bad)


def test_trained_weights_are_exported_as_given(small_net, tmp_path):
    torch.manual_seed(3)
    from igcv_nas.nn.build import build_model
    m = build_model(small_net)
    for p in m.parameters():
        p.data.normal_(0, 0.1)
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    rep = export(small_net, tmp_path / "t", ("json", "pt"), state_dict=sd)
    assert rep["ok"]
    blob = torch.load(tmp_path / "t" / "weights.pt", weights_only=True)
    assert blob["trained"] is True and blob["arch_id"] == small_net.arch_id
    assert all(torch.equal(blob["state_dict"][k], v) for k, v in sd.items())


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, cifar_dir):
    from igcv_nas.cli.search import main as search
    d = tmp_path_factory.mktemp("exportrun") / "run"
    assert search(["--space", SMALL, "--flops", "4M", "--trials", "3", "--epochs", "1",
                   "--train-fraction", "0.002", "--batch-size", "16", "--val-size", "100",
                   "--cpus-per-trial", "1", "--quiet", "--no-asha", "--data-dir", str(cifar_dir),
                   "--run-dir", str(d)]) == 0
    yield d
    import ray
    ray.shutdown()


@pytest.mark.integration
def test_export_from_a_run(run_dir, tmp_path, capsys):
    argv = [str(run_dir), "--top", "2", "--format", "json,pt,onnx", "--out", str(tmp_path)]
    assert main(argv) == 0
    df = load_trials(run_dir)
    done = df[df.status == "complete"].sort_values(["val_acc", "macs"], ascending=[False, True])
    want = [f"{int(r.number):05d}-{r.arch_id}" for r in done.head(2).itertuples()]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(want)
    doc = json.loads((tmp_path / want[0] / "spec.json").read_text())
    prov = doc["provenance"]
    assert prov["run"] == str(run_dir.resolve()) and prov["trial"] == int(done.iloc[0].number)
    assert prov["scores"]["val_acc"] == pytest.approx(done.iloc[0].val_acc)
    assert prov["space"]["name"] == "small" and prov["variant"] == "target"
    assert json.loads((tmp_path / want[0] / "verify.json").read_text())["ok"]
    assert "onnx_outputs ok" in capsys.readouterr().out


@pytest.mark.integration
def test_export_best_by_default_and_proxy_variant(run_dir, tmp_path):
    best = json.loads((run_dir / "best.json").read_text())
    argv = [str(run_dir), "--variant", "proxy", "--format", "json", "--out", str(tmp_path)]
    assert main(argv) == 0
    (d,) = list(tmp_path.iterdir())
    assert d.name.startswith(f"{best['number']:05d}-")
    doc = json.loads((d / "spec.json").read_text())
    assert doc["spec"]["stem"]["stride"] == 1 and doc["provenance"]["variant"] == "proxy"


BAD = [
    (["--format", "json,xml"], "--format 'json,xml'"),
    (["--trial", "999"], "--trial 999: not an evaluated trial"),
    (["--top", "0"], "--top 0; accepted"),
]


@pytest.mark.integration
@pytest.mark.parametrize("argv,needle", BAD, ids=[a[1] if len(a) > 1 else a[0] for a, _ in BAD])
def test_bad_input(run_dir, tmp_path, capsys, argv, needle):
    out = tmp_path / "out"
    assert main([str(run_dir), *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
    assert not out.exists()


def test_bad_source(tmp_path, capsys):
    assert main(["nosuchnet", "--out", str(tmp_path / "o")]) == 2
    assert "neither a spec file nor a zoo network" in capsys.readouterr().err
    assert main(["igcv3_d_0.25_cifar", "--trial", "1", "--out", str(tmp_path / "o")]) == 2
    assert "is not one" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bad_spec_files_are_one_line_errors(small_net, tmp_path, capsys):
    d = json.loads(small_net.to_json())
    b = next(b for st in d["stages"] for b in st if b.get("perm_expand"))
    b["perm_expand"] = b["perm_expand"][:-1] + [b["perm_expand"][0]]  # not a permutation
    f = tmp_path / "bad_perm.json"
    f.write_text(json.dumps(d))
    assert main([str(f), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad_perm.json" in err and "permutation" in err
    # a block that must be exactly complementary but is not: IGCV3 blocks are only relaxed
    d = json.loads(small_net.to_json())
    b = next(b for st in d["stages"] for b in st if b["kind"] == "igcv3")
    b["require"] = "exact"
    f = tmp_path / "not_exact.json"
    f.write_text(json.dumps(d))
    assert main([str(f), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "exact" in err
    assert not (tmp_path / "o").exists()


# -- honest weights, skipped checks, no partial output -------------------------------------------

NET = "igcv3_d_0.25_cifar"


@pytest.mark.integration
def test_untrained_export_says_so(small_net, tmp_path, capsys):
    out = tmp_path / "o"
    assert main([NET, "--format", "json,pt,torchscript", "--out", str(out)]) == 0
    d = out / small_net.arch_id
    io = capsys.readouterr()
    assert io.out.splitlines() == [
        f"{d}: weights UNTRAINED: initialisation (seed 0); checks: arch_id ok, weights_arch_id ok, "
        "outputs_informative ok, rebuilt_outputs ok, fvcore_macs ok, torchscript_outputs ok"]
    assert io.err.splitlines() == [
        "igcv-export: WARNING: this export holds the initialisation, NOT trained weights: its "
        "outputs are meaningless (the checks only show that every artifact computes the same "
        "function). Train and export trained weights with:",
        f"  igcv-train {d / 'spec.json'} --epochs 200 --out trained/{small_net.arch_id}",
        f"  igcv-export trained/{small_net.arch_id}/spec.json --weights "
        f"trained/{small_net.arch_id}/weights.pt --out {out}"]
    v = json.loads((d / "verify.json").read_text())
    assert v["weights"] == {"trained": False, "source": "initialisation (seed 0)"}
    assert v["ok"] is True and v["skipped"] == []
    assert json.loads((d / "spec.json").read_text())["weights"] == v["weights"]
    blob = torch.load(d / "weights.pt", weights_only=True)
    assert (blob["trained"], blob["source"]) == (False, "initialisation (seed 0)")


def test_trained_weights_are_recorded_with_their_source(small_net, tmp_path, capsys):
    untrained = tmp_path / "u"
    assert main([NET, "--format", "json,pt", "--out", str(untrained)]) == 0
    uw = untrained / small_net.arch_id / "weights.pt"
    blob = torch.load(uw, weights_only=True)
    wf = tmp_path / "w.pt"  # as igcv-train writes them (these have informative outputs)
    torch.save({"state_dict": blob["state_dict"], "arch_id": small_net.arch_id,
                "trained": True}, wf)
    capsys.readouterr()
    out = tmp_path / "o"
    assert main([NET, "--weights", str(wf), "--format", "json,pt", "--out", str(out)]) == 0
    io = capsys.readouterr()
    d = out / small_net.arch_id
    assert io.out.startswith(f"{d}: weights trained: {wf}; checks: arch_id ok,") and io.err == ""
    v = json.loads((d / "verify.json").read_text())
    assert v["weights"] == {"trained": True, "source": str(wf)}
    assert torch.load(d / "weights.pt", weights_only=True)["source"] == str(wf)
    # an untrained igcv-export weights.pt given as --weights stays untrained, and says so
    out2 = tmp_path / "o2"
    assert main([NET, "--weights", str(uw), "--format", "json,pt", "--out", str(out2)]) == 0
    io = capsys.readouterr()
    assert io.out.startswith(f"{out2 / small_net.arch_id}: weights UNTRAINED: {uw}; checks:")
    v = json.loads((out2 / small_net.arch_id / "verify.json").read_text())
    assert v["weights"] == {"trained": False, "source": str(uw)}
    assert "WARNING: this export holds the initialisation" in io.err


@pytest.mark.integration
def test_a_check_that_cannot_run_is_skipped_not_ok(small_net, tmp_path):
    """onnxruntime made unimportable in a child process: onnx_outputs is skipped, not passed."""
    import subprocess
    import sys
    out = tmp_path / "o"
    code = ("import sys; sys.modules['onnxruntime'] = None\n"
            "from igcv_nas.cli.export import main\n"
            f"sys.exit(main([{NET!r}, '--format', 'json,pt,onnx', '--out', {str(out)!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip().endswith(
        "onnx_checker ok, onnx_outputs skipped (onnxruntime not installed "
        "(pip install -e '.[deploy]'))")
    v = json.loads((out / small_net.arch_id / "verify.json").read_text())
    onnx_out = next(c for c in v["checks"] if c["check"] == "onnx_outputs")
    assert onnx_out == {"check": "onnx_outputs", "ok": None,
                        "skipped": "onnxruntime not installed (pip install -e '.[deploy]')"}
    assert v["ok"] is True and v["skipped"] == ["onnx_outputs"]


@pytest.mark.integration
def test_verify_without_weights_skips_the_model_checks(exported, tmp_path):
    out, _ = exported
    d = tmp_path / "spec_only"
    d.mkdir()
    (d / "spec.json").write_bytes((out / "spec.json").read_bytes())
    (d / "model.onnx").write_bytes((out / "model.onnx").read_bytes())
    rep = verify(d)
    assert rep["ok"] is True
    assert rep["skipped"] == ["outputs_informative", "rebuilt_outputs", "fvcore_macs",
                              "onnx_outputs"]
    assert all(c["ok"] is None and c["skipped"].startswith("no weights.pt")
               for c in rep["checks"] if c["check"] in rep["skipped"])


@pytest.mark.parametrize("kind", ["wrong-shape", "junk", "no-state-dict", "missing"])
def test_bad_weights_exit_2_and_create_nothing(small_net, tmp_path, capsys, kind):
    from igcv_nas.nn.build import build_model
    wf = tmp_path / "w.pt"
    if kind == "wrong-shape":
        torch.save(build_model(zoo.get("igcv3_d_0.5_cifar")).state_dict(), wf)
        needle = (f"--weights {wf}: not weights of arch {small_net.arch_id} (size mismatch for "
                  "stem.conv.convs.0.weight: copying a param with shape torch.Size([16, 3, 3, 3]) "
                  "from checkpoint, the shape in current model is torch.Size([8, 3, 3, 3]).)")
    elif kind == "junk":
        wf.write_text("not a weights file")
        needle = f"--weights {wf}: not a torch weights file (torch.load: "
    elif kind == "no-state-dict":
        torch.save({"epochs": 3}, wf)
        needle = f"--weights {wf}: holds no state_dict; accepted: igcv-train's weights.pt"
    else:
        needle = f"--weights {wf}: no such file"
    out = tmp_path / "out"
    assert main([NET, "--weights", str(wf), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("igcv-export: error: ") and needle in err
    assert not out.exists()


def test_a_failed_verification_leaves_no_directory(small_net, tmp_path, capsys):
    """All-zero weights: constant outputs, outputs_informative fails, exit 1, nothing left."""
    from igcv_nas.nn.build import build_model
    m = build_model(small_net)
    wf = tmp_path / "zeros.pt"
    torch.save({k: torch.zeros_like(v) for k, v in m.state_dict().items()}, wf)
    out = tmp_path / "out"
    assert main([NET, "--weights", str(wf), "--format", "json,pt", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"igcv-export: {out / small_net.arch_id}: verification failed: "
                          "outputs_informative (output_std=0.0, minimum=0.0001)")
    assert not out.exists()
    # into an existing folder: the folder stays, no partial export and no temporary folder in it
    out.mkdir()
    assert main([NET, "--weights", str(wf), "--format", "json,pt", "--out", str(out)]) == 1
    assert list(out.iterdir()) == []


@pytest.mark.integration
def test_re_export_replaces_the_files_it_wrote(small_net, tmp_path):
    out = tmp_path / "net"
    export(small_net, out, ("json", "pt", "torchscript"))
    assert sorted(p.name for p in out.iterdir()) == [
        "model.torchscript.pt", "spec.json", "verify.json", "weights.pt"]
    export(small_net, out, ("json",))
    assert sorted(p.name for p in out.iterdir()) == ["spec.json", "verify.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net"]  # no temporary siblings


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_staged_dir_removes_everything_when_interrupted(tmp_path, exc):
    from igcv_nas.artifacts.export import staged_dir
    from igcv_nas.fileio import write_text
    with pytest.raises(exc):
        with staged_dir(tmp_path / "final") as d:
            write_text(d / "spec.json", "{}")
            raise exc()
    assert list(tmp_path.iterdir()) == []
    with staged_dir(tmp_path / "final") as d:
        write_text(d / "spec.json", "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["final"]
    assert (tmp_path / "final" / "spec.json").read_text() == "{}"


# ---------------------------------------------------------------------------------------------
# from Python: igcv_nas.artifacts.export.prepare_export gives the command's guarantees

def _cli_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("igcv-export: error: "), err
    return err.removeprefix("igcv-export: error: ")


def _weights_file(tmp_path: Path, kind: str) -> Path:
    from igcv_nas.nn.build import build_model
    wf = tmp_path / "w.pt"
    if kind == "wrong-shape":
        torch.save(build_model(zoo.get("igcv3_d_0.5_cifar")).state_dict(), wf)
    elif kind == "junk":
        wf.write_text("not a weights file")
    elif kind == "no-state-dict":
        torch.save({"epochs": 3}, wf)
    return wf


# (CLI arguments after SOURCE, the library keywords, the error class)
SAME = [
    (["--format", "json,xml"], {"formats": "json,xml"}, "InputError"),
    (["--format", ","], {"formats": ","}, "InputError"),
    (["--trial", "1"], {"trial": 1}, "InputError"),
    (["--pareto"], {"pareto": True}, "InputError"),
]


@pytest.mark.parametrize("argv,kw,cls", SAME, ids=[" ".join(a) for a, _, _ in SAME])
def test_library_refuses_what_the_cli_refuses_with_its_message(argv, kw, cls, tmp_path, capsys):
    from igcv_nas import errors
    from igcv_nas.artifacts.export import prepare_export
    out = tmp_path / "out"
    expected = _cli_error([NET, *argv, "--out", str(out)], capsys)
    with pytest.raises(getattr(errors, cls)) as e:
        prepare_export(NET, out, **kw)
    assert " ".join(str(e.value).split()) == expected
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["wrong-shape", "junk", "no-state-dict", "missing"])
def test_library_refuses_bad_weights_as_the_cli_does(kind, tmp_path, capsys):
    from igcv_nas.errors import InputError
    from igcv_nas.artifacts.export import prepare_export
    wf = _weights_file(tmp_path, kind)
    out = tmp_path / "out"
    expected = _cli_error([NET, "--weights", str(wf), "--out", str(out)], capsys)
    with pytest.raises(InputError) as e:
        prepare_export(NET, out, weights=wf)  # a Path as well as a string
    assert " ".join(str(e.value).split()) == expected
    assert not out.exists()


def test_library_refuses_bad_sources_and_out_as_the_cli_does(tmp_path, capsys):
    from igcv_nas.errors import IGCVError
    from igcv_nas.artifacts.export import prepare_export
    afile = tmp_path / "afile"
    afile.write_text("keep")
    plain = tmp_path / "plain"
    plain.mkdir()
    for source, out in (("nosuchnet", tmp_path / "o"), (NET, afile), (str(plain), tmp_path / "o")):
        expected = _cli_error([source, "--out", str(out)], capsys)
        with pytest.raises(IGCVError) as e:
            prepare_export(source, out)
        assert " ".join(str(e.value).split()) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "plain"]
    assert afile.read_text() == "keep" and list(plain.iterdir()) == []


def test_values_only_python_can_give_are_refused(small_net, tmp_path):
    from igcv_nas.errors import InputError
    from igcv_nas.artifacts.export import prepare_export
    with pytest.raises(InputError, match=r"^--variant 'proxi'; accepted: target, proxy$"):
        prepare_export(small_net, tmp_path / "o", variant="proxi")
    with pytest.raises(InputError, match=r"^--deploy 'fast'; accepted: none, fold, auto, all$"):
        prepare_export(small_net, tmp_path / "o", deploy="fast")
    with pytest.raises(InputError, match=r"^--format 'json,xml'; accepted"):
        prepare_export(small_net, tmp_path / "o", formats=["json", "xml"])
    with pytest.raises(InputError, match=r"^--format ''; accepted"):
        prepare_export(small_net, tmp_path / "o", formats=())
    with pytest.raises(InputError, match=r"select trials of a run directory, and "
                                         r"igcv3_d_0\.25_cifar is not one"):
        prepare_export(small_net, tmp_path / "o", top=2)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_verification_is_a_result_and_leaves_nothing(small_net, tmp_path):
    from igcv_nas.nn.build import build_model
    from igcv_nas.artifacts.export import prepare_export
    wf = tmp_path / "zeros.pt"
    torch.save({k: torch.zeros_like(v) for k, v in build_model(small_net).state_dict().items()},
               wf)
    out = tmp_path / "out"
    seen = []
    (r,) = prepare_export(NET, out, weights=str(wf), formats="json,pt").run(seen.append)
    assert seen == [r] and not r.ok and r.report is None and r.out == out / small_net.arch_id
    assert str(r.error).startswith(f"{out / small_net.arch_id}: verification failed: "
                                   "outputs_informative")
    assert not out.exists()


@pytest.mark.integration
def test_library_writes_what_the_cli_writes(small_net, tmp_path, capsys):
    from igcv_nas.artifacts.export import export_source
    cli_out, lib_out = tmp_path / "cli", tmp_path / "lib"
    assert main([NET, "--format", "json,pt", "--out", str(cli_out)]) == 0
    capsys.readouterr()
    (r,) = export_source(NET, lib_out, formats=("json", "pt"))
    assert r.ok and not r.trained and r.out == lib_out / small_net.arch_id
    assert r.spec_json == r.out / "spec.json" and r.report["ok"]
    (c,) = list(cli_out.iterdir())
    assert c.name == r.out.name
    assert sorted(p.name for p in c.iterdir()) == sorted(p.name for p in r.out.iterdir()) == [
        "spec.json", "verify.json", "weights.pt"]
    a, b = (json.loads((d / "spec.json").read_text()) for d in (c, r.out))
    assert a == b and a["provenance"]["source"] == NET
    wa, wb = (torch.load(d / "weights.pt", weights_only=True) for d in (c, r.out))
    assert all(torch.equal(wa["state_dict"][k], wb["state_dict"][k]) for k in wa["state_dict"])


@pytest.mark.integration
def test_library_selects_a_runs_trials_as_the_cli_does(run_dir, tmp_path, capsys):
    from igcv_nas.errors import IGCVError
    from igcv_nas.artifacts.export import prepare_export
    for argv, kw in ((["--trial", "999"], {"trial": 999}), (["--top", "0"], {"top": 0})):
        expected = _cli_error([str(run_dir), *argv, "--out", str(tmp_path / "o")], capsys)
        with pytest.raises(IGCVError) as e:
            prepare_export(run_dir, tmp_path / "o", **kw)
        assert " ".join(str(e.value).split()) == expected
    prepared = prepare_export(run_dir, tmp_path / "o", top=2, formats="json")
    df = load_trials(run_dir)
    done = df[df.status == "complete"].sort_values(["val_acc", "macs"], ascending=[False, True])
    assert [j.name for j in prepared.jobs] == [f"{int(r.number):05d}-{r.arch_id}"
                                               for r in done.head(2).itertuples()]
    assert not (tmp_path / "o").exists()  # prepared: nothing written yet
    results = prepared.run()
    assert [r.out.name for r in results] == [j.name for j in prepared.jobs]
    assert all(r.ok for r in results)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(j.name
                                                                       for j in prepared.jobs)


# ---------------------------------------------------------------------------------------------
# re-exporting into a folder holding files the export did not write (issue 22, item 7)

def _snapshot(d: Path) -> dict[str, bytes | None]:
    """Every entry under ``d`` (relative path -> bytes, None for a folder)."""
    return {str(p.relative_to(d)): (None if p.is_dir() else p.read_bytes())
            for p in sorted(d.rglob("*"))}


def test_spec_json_lists_the_files_the_export_wrote(small_net, tmp_path):
    import hashlib
    out = tmp_path / "net"
    export(small_net, out, ("json", "pt"))
    doc = json.loads((out / "spec.json").read_text())
    assert doc["files"] == {
        "spec.json": None, "verify.json": None,
        "weights.pt": hashlib.sha256((out / "weights.pt").read_bytes()).hexdigest()}


def test_re_export_leaves_files_it_did_not_write(small_net, tmp_path, capsys):
    out = tmp_path / "o"
    argv = [NET, "--format", "json,pt", "--out", str(out)]
    assert main(argv) == 0
    d = out / small_net.arch_id
    (d / "notes.txt").write_text("my notes")
    (d / "mine").mkdir()
    (d / "mine" / "keep.txt").write_text("keep")
    d.chmod(0o700)  # the folder itself is left as the user set it, not replaced
    inode = d.stat().st_ino
    assert main(argv) == 0
    assert sorted(p.name for p in d.iterdir()) == [
        "mine", "notes.txt", "spec.json", "verify.json", "weights.pt"]
    assert (d / "notes.txt").read_text() == "my notes"
    assert (d / "mine" / "keep.txt").read_text() == "keep"
    assert d.stat().st_ino == inode and (d.stat().st_mode & 0o777) == 0o700
    # fewer formats: the weights.pt it wrote goes, the user's files stay
    assert main([NET, "--format", "json", "--out", str(out)]) == 0
    assert sorted(p.name for p in d.iterdir()) == ["mine", "notes.txt", "spec.json",
                                                   "verify.json"]
    assert (d / "notes.txt").read_text() == "my notes"
    assert [p.name for p in out.iterdir()] == [small_net.arch_id]  # no temporary siblings


def test_a_changed_file_the_export_would_not_write_is_kept(small_net, tmp_path, capsys):
    """weights.pt replaced by the user (own trained weights): a json-only re-export keeps it."""
    out = tmp_path / "o"
    assert main([NET, "--format", "json,pt", "--out", str(out)]) == 0
    d = out / small_net.arch_id
    (d / "weights.pt").write_bytes(b"the user's own weights")
    assert main([NET, "--format", "json", "--out", str(out)]) == 0
    assert sorted(p.name for p in d.iterdir()) == ["spec.json", "verify.json", "weights.pt"]
    assert (d / "weights.pt").read_bytes() == b"the user's own weights"


FOREIGN = ["changed-weights", "own-onnx", "no-manifest", "file-in-the-way"]


@pytest.mark.parametrize("kind", FOREIGN)
def test_re_export_refuses_to_replace_a_file_it_did_not_write(small_net, tmp_path, capsys,
                                                               kind):
    from igcv_nas.errors import InputError
    from igcv_nas.artifacts.export import prepare_export
    out = tmp_path / "o"
    d = out / small_net.arch_id
    if kind == "file-in-the-way":
        out.mkdir()
        d.write_text("a file where the export folder would go")
        clash, more = d, ""
    elif kind == "no-manifest":  # a folder the user made, not an export
        d.mkdir(parents=True)
        (d / "spec.json").write_text(small_net.to_json())
        (d / "weights.pt").write_bytes(b"mine")
        clash, more = d / "spec.json", "; also in that folder: weights.pt"
    else:
        assert main([NET, "--format", "json,pt", "--out", str(out)]) == 0
        if kind == "changed-weights":
            (d / "weights.pt").write_bytes(b"the user's own weights")
            clash = d / "weights.pt"
        else:
            (d / "model.onnx").write_bytes(b"the user's own onnx")
            clash = d / "model.onnx"
        more = ""
    before = _snapshot(tmp_path)
    msg = (f"{clash}: not written by igcv-export (or changed since it was) and exporting would "
           f"replace it; move it away or export to another --out{more}")
    capsys.readouterr()
    assert _cli_error([NET, "--format", "json,pt,onnx", "--out", str(out)], capsys) == msg
    with pytest.raises(InputError) as e:
        prepare_export(NET, out, formats="json,pt,onnx")
    assert str(e.value) == msg
    with pytest.raises(InputError) as e:
        export(small_net, d, ("json", "pt", "onnx"))
    assert str(e.value) == msg
    assert _snapshot(tmp_path) == before  # nothing replaced, nothing left beside it


def test_an_interrupted_re_export_leaves_files_the_next_one_recognises(small_net, tmp_path,
                                                                       monkeypatch):
    """The new files are renamed over the old ones one by one, spec.json (with the digests of the
    old files it replaces) first: a failure half-way leaves every file whole and recognised as
    the export's own, and the next export completes; the user's file is never touched."""
    import os
    out = tmp_path / "net"
    export(small_net, out, ("json", "pt"))
    (out / "notes.txt").write_text("my notes")
    blob = torch.load(out / "weights.pt", weights_only=True)  # other weights: other bytes
    sd = {k: v * 1.01 if v.is_floating_point() else v for k, v in blob["state_dict"].items()}
    real = os.replace

    def failing(src, dst):
        if Path(dst) == out / "weights.pt":  # the commit's rename, not the staging write
            raise OSError(28, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError, match="No space left"):
        export(small_net, out, ("json", "pt"), state_dict=sd)
    monkeypatch.setattr(os, "replace", real)
    assert set(json.loads((out / "spec.json").read_text())["replacing"]) == {"weights.pt"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net"]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "spec.json", "verify.json",
                                                     "weights.pt"]
    rep = export(small_net, out, ("json", "pt"), state_dict=sd)
    assert rep["ok"] and rep["weights"]["trained"] is True
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "spec.json", "verify.json",
                                                     "weights.pt"]
    assert "replacing" not in json.loads((out / "spec.json").read_text())
    assert (out / "notes.txt").read_text() == "my notes"


# -- folders get the user's umask ---------------------------------------------------------------

@pytest.mark.parametrize("umask,mode", [(0o022, 0o755), (0o027, 0o750)],
                         ids=["umask-022", "umask-027"])
def test_export_folders_get_the_umask_like_mkdir(small_net, tmp_path, umask, mode):
    import os
    import stat
    from igcv_nas.artifacts.export import prepare_export
    old = os.umask(umask)
    try:
        (r,) = prepare_export(small_net, tmp_path / "root", formats="json").run()
    finally:
        os.umask(old)
    assert r.ok and r.out == tmp_path / "root" / small_net.arch_id
    assert stat.S_IMODE((tmp_path / "root").stat().st_mode) == mode
    assert stat.S_IMODE(r.out.stat().st_mode) == mode


# -- a run that used the ladder: each architecture exported once --------------------------------

@pytest.fixture(scope="module")
def ladder_run(tmp_path_factory) -> tuple[Path, list[str]]:
    """A finished ladder run written by the search engine itself, driven by hand without Ray or
    training (tests/test_engine.py's helpers): 4 architectures at the first rung (val_acc 0.30,
    0.10, 0.40, 0.20), the best 2 promoted (0.45 and 0.50 at 3x the images) and both re-trained
    with 2 fresh seeds; the one second at the first rung and at the promotion wins the
    confirmation (mean 0.615 against 0.415). trials.csv then holds 4 rows for each finalist.
    Returns the run directory and the export names, best first by the most-trained score."""
    from igcv_nas.search.engine import FINISHED
    from .test_engine import make_engine, result
    eng = make_engine(tmp_path_factory.mktemp("ladder"))
    arch = {}
    for i, acc in enumerate((0.30, 0.10, 0.40, 0.20)):
        cfg = eng.next_config(f"t{i}")
        arch[acc] = f"{cfg['number']:05d}-{cfg['arch_id']}"
        eng.on_complete(f"t{i}", result(acc))
    names = {acc: name for acc, name in arch.items()}
    by_number = {int(n.split("-")[0]): acc for acc, n in names.items()}
    for i in range(2):  # promotions: first-rung 0.40 -> 0.50, 0.30 -> 0.45
        c = eng.next_config(f"p{i}")
        eng.on_complete(f"p{i}", result({0.40: 0.50, 0.30: 0.45}[by_number[c["number"]]]))
    for i in range(4):  # confirmations: the 0.30 one wins
        c = eng.next_config(f"c{i}")
        base = 0.60 if by_number[c["number"]] == 0.30 else 0.40
        eng.on_complete(f"c{i}", result(base + 0.01 * c["seed"]))
    assert eng.next_config("end") == FINISHED
    run = eng.run.path
    df = load_trials(run)
    done = df[df.status == "complete"]  # the others are samples rejected before training
    assert len(done) == 10 and sorted(done.number.value_counts()) == [1, 1, 4, 4]
    order = [names[0.30], names[0.40], names[0.20], names[0.10]]
    best = json.loads((run / "best.json").read_text())
    assert best["confirmed"] and f"{best['number']:05d}-{best['arch_id']}" == order[0]
    return run, order


def test_a_ladder_runs_best_is_its_confirmed_winner_exported_once(ladder_run, tmp_path, capsys):
    from igcv_nas.artifacts.export import prepare_export
    run, order = ladder_run
    assert [j.name for j in prepare_export(run, tmp_path / "o").jobs] == order[:1]
    n = int(order[0].split("-")[0])
    assert [j.name for j in prepare_export(run, tmp_path / "o", trial=n).jobs] == order[:1]
    assert main([str(run), "--format", "json", "--out", str(tmp_path / "o")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert [p.name for p in (tmp_path / "o").iterdir()] == order[:1]
    prov = json.loads((tmp_path / "o" / order[0] / "spec.json").read_text())["provenance"]
    assert prov["trial"] == n and prov["scores"]["val_acc"] == pytest.approx(0.30)
    assert prov["ranked_by"] == {"score": "val_acc", "rung": 2, "mean": pytest.approx(0.615),
                                 "runs": 2}


def test_a_ladder_runs_top_k_are_k_distinct_architectures(ladder_run, tmp_path, capsys):
    from igcv_nas.artifacts.export import prepare_export
    run, order = ladder_run
    assert [j.name for j in prepare_export(run, tmp_path / "o", top=3).jobs] == order[:3]
    assert [j.name for j in prepare_export(run, tmp_path / "o", top=10).jobs] == order
    pareto = [f"{r['number']:05d}-{r['arch_id']}"
              for r in json.loads((run / "pareto.json").read_text())]
    jobs = [j.name for j in prepare_export(run, tmp_path / "o", pareto=True).jobs]
    assert jobs == pareto and len(set(jobs)) == len(jobs)
    assert main([str(run), "--top", "3", "--format", "json", "--out", str(tmp_path / "o")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(order[:3])
    ranked = [json.loads((tmp_path / "o" / name / "spec.json").read_text())["provenance"]
              ["ranked_by"] for name in order[:3]]
    assert [(r["rung"], r["runs"]) for r in ranked] == [(2, 2), (2, 2), (0, 1)]
    assert [r["mean"] for r in ranked] == [pytest.approx(v) for v in (0.615, 0.415, 0.20)]
