from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from igcv_nas.arch import zoo
from igcv_nas.cli.inspect import main
from igcv_nas.arch.cost import count


def test_zoo_json_report(capsys):
    assert main(["mobilenet_v2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["macs"], r["flops"], r["params"]) == (300_774_272, 601_548_544, 3_504_872)
    assert r["valid"] and r["complementary"] == "relaxed"
    assert len(r["blocks"]) == 17
    assert sum(b["macs"] for b in r["blocks"]) < r["macs"]  # stem, head and classifier: own rows


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
    ("identity", "s0.b0: complementary condition violated: "
                 "output channel 0 has no path to input channel 4"),
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
    r = subprocess.run([str(exe), "igcv3_d_cifar", "--json"], capture_output=True, text=True,
                       check=True)
    assert json.loads(r.stdout)["params"] == count(zoo.igcv3_d(cifar=True)).params


def _table_cells(out: str) -> dict[str, list[str]]:
    """label -> cells of each row of the rich table (the box characters stripped)."""
    cells = {}
    for ln in out.splitlines():
        if ln.startswith("│"):
            c = [x.strip() for x in ln.strip("│").split("│")]
            cells[c[0]] = c
    return cells


@pytest.mark.parametrize("source", ["igcv3_d", "mobilenet_v2_0.5_cifar", "tiny.json"])
def test_rows_add_up_to_the_totals(source, tmp_path, tiny, capsys, monkeypatch):
    if source.endswith(".json"):
        (tmp_path / source).write_text(json.dumps(tiny))
        monkeypatch.chdir(tmp_path)
    assert main([source, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    spec = zoo.get(source) if not source.endswith(".json") else None
    if spec is not None:
        c = count(spec)
        assert (r["macs"], r["params"]) == (c.macs, c.params)
    rows = [r["stem"], *r["blocks"], *([r["head"]] if r["head"] else []), r["classifier"]]
    assert sum(x["macs"] for x in rows) == r["macs"]
    assert sum(x["params"] for x in rows) == r["params"]
    assert sum(x["flops"] for x in rows) == r["flops"]
    # the table shows the same rows, and its total row is their sum
    assert main([source]) == 0
    cells = _table_cells(capsys.readouterr().out)
    labels = [x["label"] for x in rows]
    assert list(cells) == labels + ["total"]
    macs = lambda lab: int(cells[lab][-2].replace(",", ""))  # noqa: E731
    params = lambda lab: int(cells[lab][-1].replace(",", ""))  # noqa: E731
    assert sum(macs(lab) for lab in labels) == macs("total") == r["macs"]
    assert sum(params(lab) for lab in labels) == params("total") == r["params"]


def test_tiny_rows_by_hand(tmp_path, tiny, capsys):
    """The tiny spec of conftest: stem 3x3/2 3->8 at 4x4 out, no head, 8->10 classifier."""
    p = tmp_path / "tiny.json"
    p.write_text(json.dumps(tiny))
    assert main([str(p), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["stem"] == {"label": "stem", "kind": "conv 3x3/2", "resolution": [8, 4],
                         "macs": 9 * 3 * 8 * 16, "flops": 2 * 9 * 3 * 8 * 16,
                         "params": 9 * 3 * 8 + 16}
    assert r["head"] is None
    assert r["classifier"]["kind"] == "avg pool, linear 8->10"
    assert (r["classifier"]["macs"], r["classifier"]["params"]) == (80, 90)


def test_table_is_not_wrapped_when_not_on_a_terminal(capsys):
    """capsys is not a terminal: every row and the summary line stay on one line each."""
    assert main(["igcv3_d"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    table = [ln for ln in lines if ln[:1] in "┏┃┡│├└"]
    assert len({len(ln) for ln in table}) == 1 and len(table[0]) > 80
    cells = _table_cells(out)
    assert len(cells) == 1 + 32 + 2 + 1  # stem, 32 blocks, head, classifier, total
    assert cells["classifier"][1] == "avg pool, linear 1280->1000"
    summary = next(ln for ln in lines if ln.startswith("MACs "))
    assert summary.endswith("permutation traffic 54.44MB")
