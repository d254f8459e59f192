from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from igcv_nas import zoo
from igcv_nas.cli.inspect import main
from igcv_nas.cost import count


def test_zoo_json_report(capsys):
    assert main(["mobilenet_v2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["macs"], r["flops"], r["params"]) == (300_774_272, 601_548_544, 3_504_872)
    assert r["valid"] and r["complementary"] == "relaxed"
    assert len(r["blocks"]) == 17
    assert sum(b["macs"] for b in r["blocks"]) < r["macs"]  # stem, head and classifier come on top


def test_target_changes_resolution_and_classes(capsys):
    assert main(["mobilenet_v2", "--target", "32", "--classes", "10", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["input_size"] == 32 and r["num_classes"] == 10
    assert r["blocks"][0]["resolution"] == [16, 16]


def test_spec_file_table(tmp_path, tiny, capsys):
    p = tmp_path / "tiny.json"
    p.write_text(json.dumps(tiny))
    assert main([str(p)]) == 0
    out = capsys.readouterr().out
    assert "valid; complementary: exact" in out
    assert "MACs 6,352" in out


@pytest.mark.parametrize("content,msg", [
    ('{"input_size": 8,', "malformed JSON at line 1"),
    (None, "unknown block kind 'conv9'"),
    ("perm", "s0.b0.layer0: not a permutation of 0..7"),
    ("identity", "s0.b0: complementary condition violated: output channel 0 has no path to input channel 4"),
])
def test_bad_specs_exit_2_with_one_line(tmp_path, tiny, capsys, content, msg):
    if content is None:
        tiny["stages"][0][0]["kind"] = "conv9"
    elif content == "perm":
        tiny["stages"][0][0]["layers"][0]["perm"] = [0, 0, 1, 2, 3, 4, 5, 6]
    elif content == "identity":
        tiny["stages"][0][0]["layers"][0]["perm"] = None
    p = tmp_path / "s.json"
    p.write_text(content if content and content.startswith("{") else json.dumps(tiny))
    assert main([str(p)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("igcv-inspect: error: ")
    assert msg in err


def test_unknown_name_exit_2(capsys):
    assert main(["resnet50"]) == 2
    assert "'resnet50' is neither a spec file nor a zoo network" in capsys.readouterr().err


def test_console_script_installed():
    exe = Path(sys.executable).parent / "igcv-inspect"
    assert exe.exists(), "igcv-inspect is not installed beside python: pip install -e '.[test]'"
    r = subprocess.run([str(exe), "igcv3_d_cifar", "--json"], capture_output=True, text=True, check=True)
    assert json.loads(r.stdout)["params"] == count(zoo.igcv3_d(cifar=True)).params
