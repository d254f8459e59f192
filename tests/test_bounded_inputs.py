"""Bounded inputs (issue 13): every hostile or oversized input is refused quickly with a one-line
SpecError / SpaceError / DataError naming the value and what is accepted.

Each case asserts the message fragment, that the message is one line, and that the refusal
returns within a few seconds; ``test_worst_inputs_stay_within_1_gb`` replays the worst ones in a
child process whose address space is capped."""
from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from igcv_nas import units
from igcv_nas.arch import zoo
from igcv_nas.cli._common import resolve_spec
from igcv_nas.evaluate.data import DataError, load_cifar, load_image_folder
from igcv_nas.arch.space import SpaceError, load_space
from igcv_nas.arch.spec import SpecError, from_dict, load
from igcv_nas.arch.validation import check

from .conftest import tiny_dict

FAST_S = 5.0  # "within a few seconds" on a loaded 2-core machine


def _refused(exc: type[Exception], fragment: str, fn, *args):
    t = time.perf_counter()
    with pytest.raises(exc) as e:
        fn(*args)
    dt = time.perf_counter() - t
    msg = str(e.value)
    assert fragment in msg, msg
    assert "\n" not in msg and len(msg) < 1000, msg
    assert dt < FAST_S, f"took {dt:.1f} s: {msg}"
    return msg


def _write(path: Path, text: str | bytes) -> Path:
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


# ---------------------------------------------------------------------------------------------
# specs

def _tiny(**top) -> dict:
    d = tiny_dict()
    d.update(top)
    return d


def _layer0(**kw) -> dict:
    d = tiny_dict()
    d["stages"][0][0]["layers"][0].update(kw)
    return d


def _block(**kw) -> dict:
    d = tiny_dict()
    d["stages"][0][0].update(kw)
    return d


SPEC_TEXTS = [
    ("[" * 100_000, "JSON nested deeper than 64 levels; accepted: at most 64"),
    ("[" * 100 + "]" * 100, "JSON nested deeper than 64 levels"),
    ('{"input_size": ' + "9" * 50 + "}",
     "a number with 50 digits; accepted: integers of at most 40"),
    ('{"input_size": ' + "9" * 5000 + "}", "a number with 5,000 digits"),
    (b'{"name": "\xff"}', "not UTF-8 text (byte 10)"),
    ('{"input_size": 32,', "malformed JSON at line 1"),
]


@pytest.mark.parametrize("text,fragment", SPEC_TEXTS, ids=range(len(SPEC_TEXTS)))
def test_bad_spec_texts_are_refused(tmp_path, text, fragment):
    p = _write(tmp_path / "s.json", text)
    msg = _refused(SpecError, fragment, load, str(p))
    assert msg.startswith(f"{p}: ")


SPEC_DICTS = [
    (_layer0(perm=list(range(100_000))),
     "s0.b0.layer0.perm: permutation of 100,000 channels; accepted: at most 16,384"),
    (_layer0(perm={"scheme": "custom", "indices": list(range(100_000))}),
     "permutation of 100,000 channels"),
    (_layer0(perm={"scheme": "interleave", "groups": 1e300}), "groups=1e+300 must be an integer"),
    (_layer0(perm={"scheme": "interleave", "groups": float("inf")}),
     "groups=inf must be an integer"),
    (_layer0(perm={"scheme": "interleave"}), "permutation scheme 'interleave' needs key 'groups'"),
    (_layer0(perm={"scheme": "custom", "indices": 5}), "permutation 5: expected a list"),
    (_layer0(out_chs=100_000), "s0.b0.layer0: out_chs=100000 is out of range; accepted: 1..16,384"),
    (_block(in_chs=10**30), "in_chs=1000000000000000000000000000000 is out of range"),
    (_block(in_chs=-10**30), "in_chs=-1000000000000000000000000000000 is out of range"),
    (_layer0(kernel=10**6), "kernel=1000000 is out of range; accepted: 1..63"),
    (_layer0(stride=10**6), "stride=1000000 is out of range; accepted: 1..64"),
    (_layer0(groups=[[10**6, 1, 1]]), "group sizes sum to more than 16,384 channels"),
    (_layer0(groups=[[1, 1, 1]] * 20_000), "group sizes sum to more than 16,384 channels"),
    (_tiny(input_size=10**6), "spec: input_size=1000000 is out of range; accepted: 1..8,192"),
    (_tiny(num_classes=10**9), "num_classes=1000000000 is out of range; accepted: 1..100,000"),
    (_tiny(head_chs=10**5), "head_chs=100000 is out of range; accepted: 0..16,384"),
    (_tiny(stem={"out_chs": 10**5}), "stem: out_chs=100000 is out of range"),
    (_tiny(name="a\nb"), "name='a\\nb' must be a string of at most 256 printable characters"),
    (_tiny(name="x" * 10**6), "must be a string of at most 256"),
    (_tiny(act=["relu"] * 10**5), "act=['relu', 'relu', 'relu', 'relu', 'relu', 'relu', 'relu', "
                                   "'relu', ...]; accepted"),
    (_tiny(stages=[[tiny_dict()["stages"][0][0]] * 1025]),
     "spec: 1,025 blocks; accepted: at most 1,024"),
    (_block(layers=[tiny_dict()["stages"][0][0]["layers"][1]] * 65),
     "s0.b0: 65 layers; accepted: at most 64 convs in an igc chain"),
]


@pytest.mark.parametrize("d,fragment", SPEC_DICTS, ids=range(len(SPEC_DICTS)))
def test_out_of_range_spec_values_are_refused(d, fragment):
    _refused(SpecError, fragment, from_dict, d)


@pytest.mark.parametrize("d,fragment", SPEC_DICTS[:3], ids=range(3))
def test_out_of_range_spec_files_are_refused(tmp_path, d, fragment):
    p = _write(tmp_path / "s.json", json.dumps(d))
    _refused(SpecError, fragment, load, str(p))


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def test_special_files_are_refused_without_reading(tmp_path):
    """/dev/zero never ends, a FIFO blocks at open, a sparse 20 GB file is never read."""
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(20 * 2**30)
    for path, fragment in (("/dev/zero", "/dev/zero: cannot read spec file (it is a device; "
                                          "accepted: a regular file)"),
                           (_fifo(tmp_path / "fifo.json"),
                            "(it is a FIFO; accepted: a regular file)"),
                           (tmp_path, "(it is a directory"),
                           (big, "spec file is larger than 16,777,216 bytes; accepted: at most "
                                 "16,777,216 bytes")):
        _refused(SpecError, fragment, load, str(path))
        _refused(SpecError, fragment, resolve_spec, str(path))
    for path, fragment in (("/dev/zero", "(it is a device"),
                           (_fifo(tmp_path / "fifo.yaml"), "(it is a FIFO"),
                           (big, "search-space file is larger than 1,048,576 bytes")):
        _refused(SpaceError, fragment, load_space, str(path))


def test_resolve_spec_reads_export_documents_bounded(tmp_path):
    doc = {"format": "igcv-nas/export@1", "spec": _tiny(input_size=10**6)}
    p = _write(tmp_path / "spec.json", json.dumps(doc))
    _refused(SpecError, f"{p}: spec: input_size=1000000 is out of range", resolve_spec, str(p))
    doc["spec"] = tiny_dict()
    p.write_text(json.dumps(doc))
    assert resolve_spec(str(p)).name == "tiny"


@pytest.mark.parametrize("name,fragment", [
    ("mobilenet_v2_1e9", "mobilenet_v2_1e9: width multiplier 1000000000.0 is not accepted; "
                         "expected a number in (0, 8]"),
    ("igcv2_nan", "width multiplier nan is not accepted"),
    ("igcv3_d_inf_cifar", "width multiplier inf is not accepted"),
    ("igcv3_d_-1", "width multiplier -1.0 is not accepted"),
    ("mobilenet_v1_0", "width multiplier 0.0 is not accepted"),
])
def test_zoo_width_multipliers_are_bounded(name, fragment):
    _refused(KeyError, fragment, zoo.get, name)      # what zoo.get always raised
    _refused(SpecError, fragment, zoo.get, name)     # and a SpecError: one except clause
    _refused(SpecError, fragment, resolve_spec, name)
    _refused(SpecError, "width multiplier 1000000000.0", zoo.igcv2, 1e9)


def test_unknown_zoo_name_keeps_its_message():
    _refused(SpecError, "'resnet50' is neither a spec file nor a zoo network", resolve_spec,
             "resnet50")
    with pytest.raises(KeyError, match="unknown zoo network 'resnet50'; accepted: igcv2"):
        zoo.get("resnet50")


def test_widest_zoo_networks_load_and_check_in_seconds():
    t = time.perf_counter()
    for name in zoo.names():
        assert check(zoo.get(f"{name}_{units.MAX_ZOO_WIDTH:g}")).ok
    assert time.perf_counter() - t < 3 * FAST_S


def test_complementary_check_is_bounded():
    """A chain of channel-wise convs with permutations at 16,384 channels would need a
    16,384 x 16,384 path matrix per layer: reported as a violation, not computed."""
    c = units.MAX_CHANNELS
    layer = {"out_chs": c, "kernel": 1, "stride": 1, "groups": c,
             "perm": {"scheme": "interleave", "groups": 2}, "act": False}
    d = {"name": "wide", "input_size": 8, "num_classes": 10, "stem": {"out_chs": c, "stride": 1},
         "head_chs": 0, "stages": [[{"kind": "igc", "in_chs": c, "layers": [layer, layer]}]]}
    t = time.perf_counter()
    rep = check(from_dict(d))
    assert time.perf_counter() - t < FAST_S
    assert [str(v) for v in rep.violations] == [
        "s0.b0: too large for the exact complementary check (268,451,840 path-matrix cells; "
        "accepted: at most 268,435,456)"]


# ---------------------------------------------------------------------------------------------
# search spaces

HEAD = "complementary: relaxed\nstem: {out_chs: 16}\nblock: {kind: igcv3}\n"
STAGE = "stages:\n  - {width: 16, depth: 1, stride: 1}\n"
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(9))

# the case: 10**9 references in 3 KB; str(description) or any walk expands them
LAUGHS_IN_DESCRIPTION = HEAD + "description:\n  - &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  - &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(9)) + STAGE

SPACE_TEXTS = [
    (LAUGHS, "YAML anchor &a at line 1 column 4 is not accepted; write the value out"),
    (LAUGHS_IN_DESCRIPTION, "YAML anchor &a at line 5 column 5 is not accepted"),
    (HEAD + "x: *y\n" + STAGE, "YAML alias *y at line 4 column 4 is not accepted"),
    (HEAD + "block: &b {kind: igcv3}\n" + STAGE, "YAML anchor &b"),
    # libyaml's scanner looks ahead and stops an unclosed one at depth 1,000 itself
    ("[" * 100_000, "malformed YAML at line 1 column 1001: exceeded maximum nesting depth"),
    ("a: " + "[" * 100 + "1" + "]" * 100 + "\n",
     "YAML nested deeper than 64 levels at line 1 column 67; accepted: at most 64"),
    ("a: [" + ", ".join(["1"] * 210_000) + "]\n", "more than 200,000 YAML values"),
    (HEAD + "d: 2001-13-45\n" + STAGE, "a YAML value cannot be read (ValueError: month must be"),
    (HEAD + "d: " + "9" * 5000 + "\n" + STAGE, "a YAML value cannot be read (ValueError: Exceeds"),
    (HEAD + "stages:\n  - {width: 1000000000, depth: 1, stride: 1}\n",
     "stages[0].width=1000000000 is not accepted; expected an integer >= 1 and <= 16,384"),
    (HEAD + "stages:\n  - {width: 16, depth: 1000000000, stride: 1}\n",
     "stages[0].depth=1000000000 is not accepted; expected an integer >= 1 and <= 1,024"),
    (HEAD + "stages:\n" + "  - {width: 16, depth: 1000, stride: 1}\n" * 2,
     "the deepest sample has 2,000 blocks"),
    (HEAD + "stages:\n" + "  - {width: 16, depth: 1, stride: 1}\n" * 65,
     "stages: 65 stages; accepted: at most 64"),
    (HEAD.replace("{kind: igcv3}", "{kind: igcv3, expand: 100000}") + STAGE,
     "block.expand=100000 is not accepted; expected an integer >= 1 and <= 16,384"),
    (HEAD.replace("{kind: igcv3}", "{kind: igcv3, expand: 16384}") + STAGE,
     "stages[0]: igcv3 block 16->16 with expand=16384, g1=2, g2=2 cannot be built: "
     "expand_chs=262,144 is out of range"),
    (HEAD.replace("{kind: igcv3}", "{kind: igc, L: [min+100000]}") + STAGE,
     "block.L='min+100000' is not accepted"),
    (HEAD.replace("{kind: igcv3}", "{kind: igc, L: 1000}") + STAGE,
     "block.L=1000 is not accepted; expected an integer >= 2, 'min' or 'min+N', at most 64"),
    (HEAD.replace("{kind: igcv3}", "{kind: igcv3, kernel: 1001}") + STAGE,
     "block.kernel=1001 is not accepted; expected an odd integer >= 1 and <= 63"),
    (HEAD.replace("{kind: igcv3}", "{kind: igcv3, g1: [[1, 100000]]}") + STAGE,
     "block.g1=[1, 100000] is not accepted"),
    (HEAD.replace("16}", "100000}") + STAGE,
     "stem.out_chs=100000 is not accepted; expected an integer >= 1 and <= 16,384"),
    (HEAD + "target: {input_size: 1000000}\n" + STAGE,
     "target.input_size=1000000 is not accepted; expected an integer >= 1 and <= 8,192"),
    (HEAD + "head_chs: 1000000\n" + STAGE, "head_chs=1000000 is not accepted"),
    (HEAD + "name: ../../etc\n" + STAGE, "name='../../etc' is not accepted; expected a non-empty "
                                         "string of at most 64 letters"),
    # 8 x 8 widths x 20 expansions x 8 x 8 groups = 81,920 local combinations in one stage:
    # counted and refused before any block is built
    (HEAD.replace("{kind: igcv3}", "{kind: igcv3, expand: [" + ", ".join(map(str, range(1, 21)))
                  + "], g1: [1, 2, 4, 8, 16, 32, 64, 128], g2: [1, 2, 4, 8, 16, 32, 64, 128]}")
     + "stages:\n  - {width: [128, 256, 384, 512, 640, 768, 896, 1024], depth: 1, stride: 1}\n"
     + "  - {width: [128, 256, 384, 512, 640, 768, 896, 1024], depth: 1, stride: 1}\n",
     "local block combinations to verify (kind x in/out width x expand/groups/K/L choices, "
     "summed over stages); accepted: at most 10,000"),
    (HEAD.replace("{kind: igcv3}", "{kind: dwsep, kernel: [" + ", ".join(
        str(k) for k in range(1, 64, 2)) + "]}") + "stages:\n"
     + "".join(f"  - {{width: [{', '.join(str(8 * i) for i in range(1, 60))}], depth: 2, "
               "stride: 1}\n" for _ in range(2)),
     "local block choices with kernels to cost; accepted: at most 100,000"),
]


@pytest.mark.parametrize("text,fragment", SPACE_TEXTS, ids=range(len(SPACE_TEXTS)))
def test_bad_space_files_are_refused(tmp_path, text, fragment):
    p = _write(tmp_path / "bad.yaml", text)
    msg = _refused(SpaceError, fragment, load_space, p)
    assert msg.startswith(f"{p}: ")


def test_space_near_the_verification_limit_loads_in_seconds(tmp_path):
    """7,992 local combinations (MAX_SPACE_CHECKS is 10,000), 6,696 of them distinct: each
    verified once (~3.5 s here), never per network (the space holds ~2 * 10**60)."""
    text = ("complementary: relaxed\nstem: {out_chs: 32}\n"
            "block: {kind: igcv3, expand: [1, 2, 3, 4, 6, 8], g1: [1, 2, 4], g2: [1, 2, 4]}\n"
            "stages:\n" + "".join(f"  - {{width: [{32 * i}, {64 * i}, {96 * i}, {128 * i}], "
                                  "depth: [1, 2, 3, 4], stride: 1}\n" for i in range(1, 9)))
    t = time.perf_counter()
    sp = load_space(_write(tmp_path / "wide.yaml", text))
    assert sp.min_macs() < sp.max_macs()
    assert time.perf_counter() - t < 4 * FAST_S
    assert sp.size() > 10**60


# ---------------------------------------------------------------------------------------------
# data

def _cifar_dir(tmp_path: Path, **override) -> Path:
    """A small CIFAR-10 layout (10 images per batch); ``override`` maps file name -> object to
    pickle (or bytes to write) in place of the good one."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    good = {n: {"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8),
                "labels": list(range(10))} for n in [f"data_batch_{i}" for i in range(1, 6)]
            + ["test_batch"]}
    good["batches.meta"] = {"label_names": [f"c{i}" for i in range(10)]}
    for name, obj in {**good, **override}.items():
        p = folder / name
        if isinstance(obj, Path):
            os.mkfifo(p)
        elif isinstance(obj, bytes):
            p.write_bytes(obj)
        else:
            p.write_bytes(pickle.dumps(obj, protocol=2))
    return tmp_path


def _batch(**kw) -> dict:
    b = {"data": np.zeros((10, 3072), np.uint8), "labels": list(range(10))}
    b.update(kw)
    return b


CIFAR_CASES = [
    ({"data_batch_3": _batch(labels=[0] * 9 + [10])},
     "data_batch_3: label 10 is outside the class range; accepted: 0..9"),
    ({"test_batch": _batch(labels=[-1] + [0] * 9)},
     "test_batch: label -1 is outside the class range"),
    ({"data_batch_1": _batch(labels=list(range(9)))},
     "data_batch_1: 9 labels for 10 images; accepted: one label per image"),
    ({"data_batch_1": _batch(labels=["a"] * 10)},
     "data_batch_1: 'labels' is not a flat list of integers"),
    ({"data_batch_1": _batch(labels=5)}, "'labels' is a int; accepted: a list of N integer labels"),
    ({"data_batch_2": _batch(data=np.zeros((10, 3072), np.float32))},
     "data_batch_2: 'data' is a float32 array of shape (10, 3072); accepted: a uint8 array of "
     "shape (N, 3072)"),
    ({"data_batch_2": _batch(data=np.zeros((10, 3071), np.uint8))}, "of shape (10, 3071)"),
    ({"data_batch_2": _batch(data=[[0] * 3072] * 10)}, "'data' is a list"),
    ({"data_batch_4": {"labels": [0]}}, "data_batch_4: no 'data' entry (has ['labels'])"),
    ({"data_batch_4": [1, 2, 3]}, "data_batch_4: expected a pickled dict, got list"),
    ({"data_batch_5": b"\x80\x02garbage"}, "data_batch_5: not a CIFAR python pickle"),
    ({"data_batch_5": pickle.dumps(os.system)},
     "not a CIFAR python pickle (UnpicklingError: refers to"),
    ({"batches.meta": {"label_names": ["a"] * 9}},
     "batches.meta: 'label_names' is ['a', 'a', 'a', 'a', 'a', 'a', 'a', 'a', ...]; accepted: a "
     "list of 10 class names"),
    ({"batches.meta": {}}, "'label_names' is None; accepted: a list of 10 class names"),
    ({"test_batch": Path("fifo")}, "test_batch: cannot read CIFAR batch file (it is a FIFO"),
]


@pytest.mark.parametrize("override,fragment", CIFAR_CASES, ids=range(len(CIFAR_CASES)))
def test_bad_cifar_files_are_refused_naming_the_file(tmp_path, override, fragment):
    root = _cifar_dir(tmp_path, **override)
    msg = _refused(DataError, fragment, load_cifar, "cifar10", root, False)
    assert str(root / "cifar-10-batches-py") in msg


def test_oversized_cifar_file_is_refused_unread(tmp_path):
    root = _cifar_dir(tmp_path)
    with open(root / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        f.truncate(units.MAX_BATCH_BYTES + 1)
    _refused(DataError, "data_batch_1: CIFAR batch file is larger than 268,435,456 bytes",
             load_cifar, "cifar10", root, False)


def test_good_small_cifar_layout_loads(tmp_path):
    train, test = load_cifar("cifar10", _cifar_dir(tmp_path), download_ok=False)
    assert len(train) == 50 and len(test) == 10 and train.classes[0] == "c0"


def _png(w: int, h: int) -> bytes:
    """A 1x1 PNG whose header claims w x h (valid CRC): what a decompression bomb looks like
    to Image.open before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("content,fragment", [
    (_png(9000, 9000), "9000x9000 = 81,000,000 pixels; accepted: at most 67,108,864"),
    (_png(100_000, 100_000), "DecompressionBombError"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 10, "cannot read image"),
    (b"not an image at all", "UnidentifiedImageError"),
    (_png(4, 4), "cannot read image"),  # header fine, pixel data truncated
    (None, "not a regular file"),
], ids=["over-limit", "pillow-bomb", "broken-header", "not-image", "truncated", "fifo"])
def test_bad_images_are_refused_naming_the_file(tmp_path, content, fragment):
    from PIL import Image
    (tmp_path / "cats").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "cats" / "ok.png")
    bad = tmp_path / "cats" / "x.png"
    if content is None:
        os.mkfifo(bad)
    else:
        bad.write_bytes(content)
    msg = _refused(DataError, fragment, load_image_folder, tmp_path, 16)
    assert f"cannot read image {bad}" in msg


@pytest.mark.parametrize("res", [0, -1, 10**6, 2.5, True])
def test_image_folder_resolution_is_bounded(tmp_path, res):
    (tmp_path / "cats").mkdir()
    _refused(DataError, f"resolution {res!r} is not accepted; expected an integer in 1..8,192",
             load_image_folder, tmp_path, res)


# ---------------------------------------------------------------------------------------------
# the worst inputs, in a child process with a capped address space

_CHILD = textwrap.dedent('''
    import json, os, resource, sys, time
    from pathlib import Path
    tmp = Path(sys.argv[1])
    import numpy, yaml  # import first: the cap is on what loading adds
    from igcv_nas.arch.space import SpaceError, load_space
    from igcv_nas.arch.spec import SpecError, load
    from igcv_nas.arch.validation import check
    from igcv_nas.arch import zoo
    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]), int(sys.argv[2])))
    cases = [(load, str(tmp / "deep.json")), (load, str(tmp / "perm.json")), (load, "/dev/zero"),
             (load_space, str(tmp / "laughs.yaml")), (load_space, str(tmp / "deep.yaml")),
             (load_space, str(tmp / "combos.yaml")), (load_space, str(tmp / "width.yaml")),
             (zoo.get, "igcv2_1e9")]
    for fn, arg in cases:
        t = time.perf_counter()
        try:
            fn(arg)
        except (SpecError, SpaceError, KeyError) as e:
            print(f"{os.path.basename(arg)} {time.perf_counter() - t:.3f} {str(e)[:60]}")
        else:
            print(f"{arg} ACCEPTED")
''')


def test_worst_inputs_stay_within_1_gb(tmp_path):
    import resource  # noqa: F401  (POSIX only, as the suite)
    d = tiny_dict()
    d["stages"][0][0]["layers"][0]["perm"] = list(range(100_000))
    files = {
        "deep.json": "[" * 100_000, "perm.json": json.dumps(d),
        "laughs.yaml": LAUGHS_IN_DESCRIPTION, "deep.yaml": "[" * 100_000,
        "combos.yaml": SPACE_TEXTS[-2][0],
        "width.yaml": next(t for t, f in SPACE_TEXTS if f.startswith("stages[0].width=")),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    base = _vm_after_imports()
    cap = base + 2**30
    r = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path), str(cap)],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert len(lines) == 8 and not any("ACCEPTED" in ln for ln in lines), r.stdout
    for ln in lines:
        assert float(ln.split()[1]) < FAST_S, ln


def _vm_after_imports() -> int:
    code = ("import numpy, yaml, igcv_nas.arch.space, igcv_nas.arch.validation;"
            "print([l for l in open('/proc/self/status') if l.startswith('VmSize')][0].split()[1])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    return int(r.stdout) * 1024
