"""Verified artifacts of one architecture: JSON spec, weights, TorchScript, ONNX.

``export(spec, out_dir, formats)`` writes into ``out_dir``:

* ``spec.json`` -- self-contained (format ``igcv-nas/export@1``): the spec with explicit
  run-length group sizes and permutation indices, MACs / FLOPs / params at its resolution, the
  complementary mode, and provenance (run, trial, proxy scores, package versions);
* ``weights.pt`` -- ``{"state_dict", "arch_id", "trained", "source"}`` (the weights given, else
  the builder's initialisation with a fixed seed and batch-norm statistics taken from one random
  batch, ``trained: false``, ``source: "initialisation (seed N)"``);
* ``model.torchscript.pt`` (``torch.jit.trace``) and ``model.onnx`` (opset 17, dynamic batch),
  as built or in the deployment form of :mod:`igcv_nas.deploy` (``deploy_mode``);
* ``verify.json`` -- what :func:`verify` found, and whether the weights are trained; export
  fails loudly when any check fails. A check that could not run (onnxruntime not installed, no
  weights to run) is recorded as ``"ok": null, "skipped": "<why>"``, never as passed.

Everything is written into a temporary sibling of ``out_dir`` and renamed into place once it
verified: a failed export (bad weights, a failed check, an interruption) leaves no ``out_dir``.

:func:`verify` rebuilds the model from ``spec.json`` alone, loads ``weights.pt`` and checks:
the rebuilt model's outputs equal those recorded at export (max abs diff <= 1e-5, fp32); fvcore's
conv + linear count of the rebuilt model equals the spec's MACs; the TorchScript outputs match
PyTorch's (<= 1e-5; <= 1e-4 in the deployment form, whose sums run in another order); the ONNX
outputs match (<= 1e-4: other kernels) with onnxruntime where it is installed, and the ONNX
checker passes otherwise.
"""
from __future__ import annotations

import io
import json
import os
import platform
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from . import __version__
from .cost import count
from .errors import IGCVError
from .fileio import write_bytes, write_json
from .spec import NetworkSpec, from_dict
from .validation import check

EXPORT_FORMAT = "igcv-nas/export@1"
FORMATS = ("json", "pt", "torchscript", "onnx")
FILES = {"json": "spec.json", "pt": "weights.pt", "torchscript": "model.torchscript.pt",
         "onnx": "model.onnx"}
TOL = {"rebuilt": 1e-5, "torchscript": 1e-5, "onnx": 1e-4, "deployed": 1e-4}
OPSET = 17
VERIFY_BATCH, VERIFY_SEED = 2, 1234


class ExportError(IGCVError, RuntimeError):
    """An export that could not be written or did not verify (one line: what and by how much)."""


def weights_info(trained: bool, source: str | None = None, seed: int = 0) -> dict:
    """What ``weights.pt`` holds: ``{"trained": True, "source": <path>}`` for weights given, or
    ``{"trained": False, "source": "initialisation (seed N)"}``."""
    if trained:
        return {"trained": True, "source": source or "given state_dict"}
    return {"trained": False, "source": source or f"initialisation (seed {seed})"}


@contextmanager
def staged_dir(final: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary folder beside ``final`` to write into; renamed to ``final`` when the
    block ends without an exception (an existing ``final`` is replaced), deleted when it raises
    (KeyboardInterrupt included), so that ``final`` is either complete or absent. The files in
    it are written with :mod:`igcv_nas.fileio`'s atomic writes."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
        old = None
        if final.exists():  # re-export: move the old one away, the new one in, then delete
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            os.replace(final, old / final.name)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def versions() -> dict:
    import torch
    return {"igcv_nas": __version__, "torch": torch.__version__,
            "python": platform.python_version()}


def document(spec: NetworkSpec, provenance: dict | None = None) -> dict:
    """The self-contained JSON document of ``spec``."""
    rep = check(spec)
    if not rep.ok:
        raise ExportError(f"spec {spec.arch_id} is invalid: {rep.violations[0]}")
    c = count(spec)
    return {"format": EXPORT_FORMAT, "arch_id": spec.arch_id, "spec": spec.to_dict(),
            "cost": {"input_size": spec.input_size, "num_classes": spec.num_classes,
                     "macs": c.macs, "flops": c.flops, "params": c.params,
                     "convention": "conv + linear multiply-accumulates at batch 1; "
                                   "FLOPs = 2 x MACs"},
            "complementary": rep.mode,
            "provenance": {**(provenance or {}), "exported_with": versions()}}


def read_document(path: str | Path) -> tuple[dict, NetworkSpec]:
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if doc.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{path}: format {doc.get('format')!r}; expected {EXPORT_FORMAT}")
    return doc, from_dict(doc["spec"])


def _sample(spec: NetworkSpec):
    import torch
    g = torch.Generator().manual_seed(VERIFY_SEED)
    return torch.randn(VERIFY_BATCH, spec.in_chs, spec.input_size, spec.input_size, generator=g)


def _model(spec: NetworkSpec, state_dict: dict | None, seed: int):
    import torch

    from .build import build_model
    torch.manual_seed(seed)
    model = build_model(spec)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    else:
        _calibrate_bn(model, spec, seed)
    return model.eval()


def _calibrate_bn(model, spec: NetworkSpec, seed: int) -> None:
    """Untrained weights: set batch-norm statistics from one random batch, so that the exported
    model's outputs are not vanishingly small (with the initial statistics the activations of a
    deep group-conv network shrink to ~1e-10 and no output comparison could see a wiring error)."""
    import torch
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(32, spec.in_chs, spec.input_size, spec.input_size, generator=g)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration pass
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()


def _to_bytes(save, *args) -> bytes:
    buf = io.BytesIO()
    save(*args, buf)
    return buf.getvalue()


def export(spec: NetworkSpec, out_dir: str | Path, formats: tuple[str, ...] = FORMATS,
           state_dict: dict | None = None, provenance: dict | None = None,
           seed: int = 0, deploy_mode: str = "none", weights_source: str | None = None,
           trained: bool | None = None) -> dict:
    """Write the artifacts of ``spec`` in ``formats`` into ``out_dir`` and verify them
    (``json`` is always written: everything else is checked against it). ``deploy_mode``
    (``none``, ``fold``, ``auto``, ``all``; :mod:`igcv_nas.deploy`) makes the TorchScript and
    ONNX artifacts the deployment form: BN folded, and 1x1 chains collapsed as asked (``fold``:
    none collapsed). ``weights_source`` (where ``state_dict`` came from) and ``trained``
    (default: whether a ``state_dict`` is given) are recorded in ``spec.json``, ``weights.pt``
    and ``verify.json``. Returns the verification report (also in ``verify.json``); raises
    :class:`ExportError` when it fails, RuntimeError when ``state_dict`` does not fit ``spec``;
    ``out_dir`` is only created when everything verified (:func:`staged_dir`)."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExportError(f"format {unknown[0]!r}; accepted: {', '.join(FORMATS)}")
    doc = document(spec, provenance)
    info = weights_info(state_dict is not None if trained is None else trained,
                        weights_source if state_dict is not None else None, seed)
    doc["weights"] = info
    model = _model(spec, state_dict, seed)
    with staged_dir(out_dir) as tmp:
        y = _write(spec, tmp, formats, model, doc, info, deploy_mode)
        return verify(tmp, reference=y, _shown_as=Path(out_dir),
                      model_for_missing_weights=None if "pt" in formats else model)


def _write(spec: NetworkSpec, out: Path, formats: tuple[str, ...], model, doc: dict, info: dict,
           deploy_mode: str):
    """Write the artifacts into ``out``; the model's output on the verification sample."""
    import torch
    x = _sample(spec)
    with torch.no_grad():
        y = model(x)
    doc["reference"] = {"input": f"torch.randn({VERIFY_BATCH}, {spec.in_chs}, {spec.input_size}, "
                                 f"{spec.input_size}, generator=torch.Generator().manual_seed("
                                 f"{VERIFY_SEED}))",
                        "output": [[float(v) for v in row] for row in y]}
    doc["artifacts"] = {"deploy": deploy_mode}
    write_json(out / FILES["json"], doc)
    runtime = model
    if deploy_mode != "none":
        from .deploy import deploy
        runtime = deploy(model, "none" if deploy_mode == "fold" else deploy_mode, spec.input_size)
    if "pt" in formats:
        write_bytes(out / FILES["pt"], _to_bytes(torch.save, {
            "state_dict": model.state_dict(), "arch_id": spec.arch_id, **info}))
    # TorchScript is deprecated in torch >= 2.10 but still what most deployment stacks load;
    # the TorchScript-based ONNX exporter needs no onnxscript. Their deprecation warnings are
    # expected here and silenced.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if "torchscript" in formats:
            with torch.no_grad():
                ts = torch.jit.trace(runtime, x)
            write_bytes(out / FILES["torchscript"], _to_bytes(torch.jit.save, ts))
        if "onnx" in formats:
            buf = io.BytesIO()
            with torch.no_grad():
                torch.onnx.export(runtime, (x,), buf, dynamo=False, opset_version=OPSET,
                                  input_names=["input"], output_names=["logits"],
                                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
            write_bytes(out / FILES["onnx"], buf.getvalue())
    return y


def verify(out_dir: str | Path, reference: Any = None, model_for_missing_weights: Any = None,
           _shown_as: Path | None = None) -> dict:
    """Check the artifacts in ``out_dir`` against ``spec.json`` (module doc); write
    ``verify.json``; raise :class:`ExportError` naming the first failed check. ``ok`` is True
    when no check failed; checks that could not run are listed under ``skipped``."""
    import torch

    from .crosscheck import fvcore_macs
    out = Path(out_dir)
    doc, spec = read_document(out / FILES["json"])
    deployed = doc.get("artifacts", {}).get("deploy", "none")
    checks: list[dict] = []

    def add(name: str, ok: bool, **info) -> None:
        checks.append({"check": name, "ok": bool(ok), **info})

    def skip(name: str, why: str) -> None:
        checks.append({"check": name, "ok": None, "skipped": why})

    add("arch_id", spec.arch_id == doc["arch_id"], spec=spec.arch_id, recorded=doc["arch_id"])
    x = _sample(spec)
    if (out / FILES["pt"]).is_file():
        blob = torch.load(out / FILES["pt"], map_location="cpu", weights_only=True)
        rebuilt = _model(spec, blob["state_dict"], 0)
        add("weights_arch_id", blob["arch_id"] == spec.arch_id, weights=blob["arch_id"])
    elif model_for_missing_weights is not None:
        rebuilt = _model(spec, model_for_missing_weights.state_dict(), 0)
    else:
        rebuilt = None
    with torch.no_grad():
        y = rebuilt(x) if rebuilt is not None else None
    if y is None:
        for name in ("outputs_informative", "rebuilt_outputs", "fvcore_macs"):
            skip(name, f"no {FILES['pt']}: no weights to run the model with")
    else:
        spread = float(y.std())
        add("outputs_informative", spread > 1e-4, output_std=spread, minimum=1e-4)
        if reference is not None:
            diff = float((y - reference).abs().max())
            add("rebuilt_outputs", diff <= TOL["rebuilt"], max_abs_diff=diff,
                tolerance=TOL["rebuilt"])
        else:  # verifying later, from the files alone: the recorded reference output
            rec = torch.tensor(doc["reference"]["output"], dtype=y.dtype)
            diff = float((y - rec).abs().max())
            add("rebuilt_outputs", diff <= TOL["rebuilt"], max_abs_diff=diff,
                tolerance=TOL["rebuilt"], against="recorded reference output")
        macs = fvcore_macs(rebuilt, spec.input_size, spec.in_chs)
        add("fvcore_macs", macs == doc["cost"]["macs"], fvcore=macs, spec=doc["cost"]["macs"])
    if (out / FILES["torchscript"]).is_file() and y is None:
        skip("torchscript_outputs", f"no {FILES['pt']}: no outputs to compare with")
    elif (out / FILES["torchscript"]).is_file():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ts = torch.jit.load(str(out / FILES["torchscript"]), map_location="cpu")
        with torch.no_grad():
            diff = float((ts(x) - y).abs().max())
        tol = TOL["torchscript"] if deployed == "none" else TOL["deployed"]
        add("torchscript_outputs", diff <= tol, max_abs_diff=diff, tolerance=tol,
            form="deployed (" + deployed + ")" if deployed != "none" else "as built")
    if (out / FILES["onnx"]).is_file():
        checks.extend(_verify_onnx(out / FILES["onnx"], x, y))
    weights = doc.get("weights")
    if weights is None and (out / FILES["pt"]).is_file():  # exported before this was recorded
        weights = {"trained": bool(blob.get("trained")),
                   "source": blob.get("source", "not recorded")}
    report = {"ok": all(c["ok"] is not False for c in checks), "arch_id": spec.arch_id,
              "weights": weights, "checks": checks,
              "skipped": [c["check"] for c in checks if c["ok"] is None],
              "verified_with": versions()}
    write_json(out / "verify.json", report)
    bad = [c for c in checks if c["ok"] is False]
    if bad:
        detail = ", ".join(f"{k}={v}" for k, v in bad[0].items() if k not in ("check", "ok"))
        raise ExportError(f"{_shown_as or out}: verification failed: {bad[0]['check']} "
                          f"({detail})")
    return report


def _verify_onnx(path: Path, x, y) -> list[dict]:
    import onnx
    out = []
    m = onnx.load(str(path))
    try:
        onnx.checker.check_model(m, full_check=True)
        out.append({"check": "onnx_checker", "ok": True})
    except onnx.checker.ValidationError as e:
        out.append({"check": "onnx_checker", "ok": False, "error": str(e).splitlines()[0]})
    try:
        import onnxruntime as ort
    except ImportError:
        out.append({"check": "onnx_outputs", "ok": None,
                    "skipped": "onnxruntime not installed (pip install -e '.[deploy]')"})
        return out
    if y is None:
        out.append({"check": "onnx_outputs", "ok": None,
                    "skipped": f"no {FILES['pt']}: no outputs to compare with"})
        return out
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"input": x.numpy()})
    import numpy as np
    diff = float(np.abs(got - y.numpy()).max())
    out.append({"check": "onnx_outputs", "ok": diff <= TOL["onnx"], "max_abs_diff": diff,
                "tolerance": TOL["onnx"], "runtime": f"onnxruntime {ort.__version__}"})
    return out
