"""Verified artifacts of one architecture: JSON spec, weights, TorchScript, ONNX.

``export(spec, out_dir, formats)`` writes into ``out_dir``:

* ``spec.json`` -- self-contained (format ``igcv-nas/export@1``): the spec with explicit
  run-length group sizes and permutation indices, MACs / FLOPs / params at its resolution, the
  complementary mode, and provenance (run, trial, proxy scores, package versions);
* ``weights.pt`` -- ``{"state_dict", "arch_id", "trained", "source"}`` (the weights given, else
  the builder's initialisation with a fixed seed and batch-norm statistics taken from one random
  batch, ``trained: false``, ``source: "initialisation (seed N)"``);
* ``model.torchscript.pt`` (``torch.jit.trace``) and ``model.onnx`` (opset 17, dynamic batch),
  as built or in the deployment form of :mod:`igcv_nas.artifacts.deploy` (``deploy_mode``);
* ``verify.json`` -- what :func:`verify` found, and whether the weights are trained; export
  fails loudly when any check fails. A check that could not run (onnxruntime not installed, no
  weights to run) is recorded as ``"ok": null, "skipped": "<why>"``, never as passed.

:func:`prepare_export` / :meth:`PreparedExport.run` are ``igcv-export`` as calls (the command is
parse -> these -> print): the source (a run directory and its selected trials, a spec file, a
zoo name), the formats, the weights and the output root checked first with nothing created,
then one verified export per architecture under the root::

    from igcv_nas.artifacts.export import prepare_export

    results = prepare_export("runs/r", "exports", top=3, formats="json,onnx").run()
    [(r.out, r.ok, r.trained) for r in results]

Everything is written into a temporary sibling of ``out_dir`` (made as ``mkdir`` makes a folder:
mode 0o777 less the umask) and moved into place once it verified: a failed export (bad weights,
a failed check, an interruption) leaves no ``out_dir``, or an existing one as it was.

Re-exporting into an existing ``out_dir`` replaces only what an export wrote there: ``spec.json``
lists its files (``"files"``: name -> sha256; null for ``spec.json`` and ``verify.json``, which
:func:`verify` rewrites), and a listed file whose bytes are still the recorded ones is the
export's own. Everything else in the folder -- notes, a sub-folder, a listed file the user changed
(their own ``weights.pt``) -- is foreign and left alone, as ``cp`` into a folder leaves its other
files: the export writes around it, and the folder itself (its mode, who has it open) is kept.
A foreign file that has the name of a file the export would write is never replaced: the export
refuses (:class:`ForeignFileError`, one line naming it, exit 2 in ``igcv-export``) before
anything is written; so does a file where the folder would go and a folder with no such list
(one the user made, or an export from before the list was recorded). The export's own files that
the new one does not write (fewer formats) are removed. The new files are renamed over the old
ones one by one, ``spec.json`` first, then carrying the digests of the old files it replaces
(``"replacing"``) and last without them: each file is whole at every moment, and an export
stopped half-way (a crash, a full disk) leaves files the next export still recognises as its own.

:func:`verify` rebuilds the model from ``spec.json`` alone, loads ``weights.pt`` and checks:
the rebuilt model's outputs equal those recorded at export (max abs diff <= 1e-5, fp32); fvcore's
conv + linear count of the rebuilt model equals the spec's MACs; the TorchScript outputs match
PyTorch's (<= 1e-5; <= 1e-4 in the deployment form, whose sums run in another order); the ONNX
outputs match (<= 1e-4: other kernels) with onnxruntime where it is installed, and the ONNX
checker passes otherwise.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import secrets
import shutil
import stat
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from .. import __version__
from ..arch.cost import count
from ..errors import IGCVError, InputError
from ..fileio import write_bytes, write_json
from ..arch.sources import resolve_valid, spec_label
from ..arch.spec import NetworkSpec, from_dict, load
from ..arch.validation import check

if TYPE_CHECKING:
    from ..search.runstore import RunDir

EXPORT_FORMAT = "igcv-nas/export@1"
FORMATS = ("json", "pt", "torchscript", "onnx")
FILES = {"json": "spec.json", "pt": "weights.pt", "torchscript": "model.torchscript.pt",
         "onnx": "model.onnx"}
TOL = {"rebuilt": 1e-5, "torchscript": 1e-5, "onnx": 1e-4, "deployed": 1e-4}
OPSET = 17
VERIFY_BATCH, VERIFY_SEED = 2, 1234


class ExportError(IGCVError, RuntimeError):
    """An export that could not be written or did not verify (one line: what and by how much)."""


class ForeignFileError(InputError):
    """An export would replace a file it did not write (module doc); nothing was written."""

    def __init__(self, clashes: Sequence[Path]):
        first, rest = clashes[0], [p.name for p in clashes[1:]]
        super().__init__(f"{first}: not written by igcv-export (or changed since it was) and "
                         "exporting would replace it; move it away or export to another --out"
                         + (f"; also in that folder: {', '.join(rest)}" if rest else ""))
        self.clashes = list(clashes)


# written by every export beside the formats' files; not hashed in the list (spec.json holds the
# list, verify.json is rewritten by every verify(DIR))
ALWAYS_WRITTEN = ("spec.json", "verify.json")


def written_names(formats: Sequence[str]) -> list[str]:
    """The files an export in ``formats`` writes (``spec.json`` always)."""
    return sorted(set(ALWAYS_WRITTEN) | {FILES[f] for f in formats if f in FILES})


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest(path: Path) -> dict | None:
    """The ``spec.json`` at ``path`` when it is an export document with its file list."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = (isinstance(doc, dict) and doc.get("format") == EXPORT_FORMAT
          and isinstance(doc.get("files"), dict) and "spec.json" in doc["files"])
    return doc if ok else None


def owned_files(folder: str | os.PathLike) -> set[str]:
    """The names of the files in ``folder`` that an export wrote and nobody changed since: listed
    in its ``spec.json`` (or, after an export stopped half-way, among the files it was
    replacing) with the same sha256, regular files (not links), directly in ``folder``."""
    folder = Path(folder)
    doc = _manifest(folder / "spec.json")
    if doc is None:
        return set()
    files = doc["files"]
    replacing = doc.get("replacing") if isinstance(doc.get("replacing"), dict) else {}
    mine = set()
    for name in set(files) | set(replacing):
        if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
            continue
        try:
            st = os.lstat(folder / name)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if name in ALWAYS_WRITTEN and name in files and files[name] is None:
            mine.add(name)
        elif _sha256(folder / name) in {files.get(name), replacing.get(name)} - {None}:
            mine.add(name)
    return mine


def foreign_clashes(out_dir: str | os.PathLike, names: Sequence[str]) -> list[Path]:
    """What writing ``names`` into ``out_dir`` would replace without an export having written it:
    ``out_dir`` itself when something other than a folder is there, else the entries named
    ``names`` that are not :func:`owned_files`."""
    out_dir = Path(out_dir)
    if not os.path.lexists(out_dir):
        return []
    if not out_dir.is_dir():
        return [out_dir]
    mine = owned_files(out_dir)
    return [out_dir / n for n in sorted(names)
            if n not in mine and os.path.lexists(out_dir / n)]


def check_replaceable(out_dir: str | os.PathLike, names: Sequence[str]) -> None:
    """:class:`ForeignFileError` when :func:`foreign_clashes` finds anything."""
    clashes = foreign_clashes(out_dir, names)
    if clashes:
        raise ForeignFileError(clashes)


def _new_dir(parent: Path, prefix: str, suffix: str) -> Path:
    """A new empty folder in ``parent``, made as ``mkdir`` makes one (mode 0o777 less the umask,
    default ACLs applied; ``tempfile.mkdtemp`` makes 0700 ones, and the export folder is this
    one renamed)."""
    for _ in range(100):
        p = parent / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            p.mkdir()
        except FileExistsError:
            continue
        return p
    raise FileExistsError(f"{parent}: no unused temporary folder name")


def weights_info(trained: bool, source: str | None = None, seed: int = 0) -> dict:
    """What ``weights.pt`` holds: ``{"trained": True, "source": <path>}`` for weights given, or
    ``{"trained": False, "source": "initialisation (seed N)"}``."""
    if trained:
        return {"trained": True, "source": source or "given state_dict"}
    return {"trained": False, "source": source or f"initialisation (seed {seed})"}


@contextmanager
def staged_dir(final: str | os.PathLike) -> Iterator[Path]:
    """A fresh folder beside ``final`` to write into (made as ``mkdir`` makes one); when the
    block ends without an exception it becomes ``final`` -- renamed to it when there is none,
    else its files are moved into the existing ``final`` (module doc: only the export's own files
    are replaced or removed, foreign ones are left alone, :class:`ForeignFileError` when one has
    the name of a new file) -- and it is deleted when the block raises (KeyboardInterrupt
    included), so that a ``final`` that was not there is either complete or absent. The files in
    it are written with :mod:`igcv_nas.fileio`'s atomic writes."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_dir(final.parent, f".{final.name}.", ".partial")
    try:
        yield tmp
        if os.path.lexists(final):
            _move_into(tmp, final)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _move_into(tmp: Path, final: Path) -> None:
    """Move the files of ``tmp`` into the existing folder ``final``, replacing only the export's
    own files there (module doc), ``spec.json`` first and last."""
    new = sorted(p.name for p in tmp.iterdir())
    check_replaceable(final, new)
    mine = owned_files(final)
    stale = sorted(mine - set(new))
    doc = _manifest(tmp / "spec.json")
    spec = "spec.json" if doc is not None else None
    replacing = {n: _sha256(final / n) for n in sorted(mine) if n not in ALWAYS_WRITTEN}
    if spec and replacing:  # the new list, and the digests of the files it is about to replace
        interim = tmp / ".spec.json.replacing"
        write_json(interim, {**doc, "replacing": replacing})
        os.replace(interim, final / spec)
    elif spec:
        os.replace(tmp / spec, final / spec)
    for n in new:
        if n != spec:
            os.replace(tmp / n, final / n)
    for n in stale:  # the export's own files that this one does not write again
        (final / n).unlink(missing_ok=True)
    if spec and replacing:
        os.replace(tmp / spec, final / spec)
    shutil.rmtree(tmp, ignore_errors=True)


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

    from ..nn.build import build_model
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
    """Write the artifacts of ``spec`` in ``formats`` into ``out_dir`` and verify them (``json`` is
    always written: everything else is checked against it). ``deploy_mode`` (``none``, ``fold``,
    ``auto``, ``all``; :mod:`igcv_nas.artifacts.deploy`) makes the TorchScript and ONNX artifacts
    the deployment form: BN folded, and 1x1 chains collapsed as asked (``fold``: none collapsed).
    ``weights_source`` (where ``state_dict`` came from) and ``trained`` (default: whether a
    ``state_dict`` is given) are recorded in ``spec.json``, ``weights.pt`` and ``verify.json``.
    Returns the verification report (also in ``verify.json``); raises :class:`ExportError` when it
    fails, RuntimeError when ``state_dict`` does not fit ``spec``; ``out_dir`` is only created when
    everything verified (:func:`staged_dir`). Into an existing ``out_dir`` only the files an
    export wrote are replaced; :class:`ForeignFileError` (nothing written) when another file has
    the name of one it writes (module doc).

    Args:
        spec: the architecture to export; it must pass validation.
        out_dir: the folder to write (created only when everything verified).
        formats: a subset of :data:`FORMATS`; ``json`` is written in any case.
        state_dict: weights for the model built from ``spec``; None: the seeded initialisation
            (batch-norm statistics calibrated on one random batch).
        provenance: recorded under ``provenance`` in ``spec.json`` (with the versions used).
        seed: the torch seed of the initialisation.
        deploy_mode: ``none``, ``fold``, ``auto`` or ``all``: the form of the TorchScript and
            ONNX artifacts.
        weights_source: where ``state_dict`` came from (recorded; ignored without one).
        trained: whether the weights are trained (recorded); None: whether ``state_dict`` is
            given.

    Returns:
        The verification report of :func:`verify` (``ok``, ``arch_id``, ``weights``,
        ``checks``, ``skipped``, ``verified_with``), also written to ``verify.json``.

    Raises:
        ExportError: a format not in :data:`FORMATS`, an invalid ``spec``, or a failed
            verification check (``out_dir`` is left as it was).
        ForeignFileError: ``out_dir`` holds a file an export did not write under the name of
            one it writes; nothing is written.
        InputError: ``deploy_mode`` is not one of the accepted modes
            (:func:`igcv_nas.artifacts.deploy.deploy`).
        RuntimeError: ``state_dict`` does not fit the model of ``spec``."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExportError(f"format {unknown[0]!r}; accepted: {', '.join(FORMATS)}")
    check_replaceable(out_dir, written_names(formats))
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
    runtime = model
    if deploy_mode != "none":
        from .deploy import deploy
        runtime = deploy(model, "none" if deploy_mode == "fold" else deploy_mode, spec.input_size)
    blobs: dict[str, bytes] = {}
    if "pt" in formats:
        blobs[FILES["pt"]] = _to_bytes(torch.save, {
            "state_dict": model.state_dict(), "arch_id": spec.arch_id, **info})
    # TorchScript is deprecated in torch >= 2.10 but still what most deployment stacks load;
    # the TorchScript-based ONNX exporter needs no onnxscript. Their deprecation warnings are
    # expected here and silenced.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if "torchscript" in formats:
            with torch.no_grad():
                ts = torch.jit.trace(runtime, x)
            blobs[FILES["torchscript"]] = _to_bytes(torch.jit.save, ts)
        if "onnx" in formats:
            buf = io.BytesIO()
            with torch.no_grad():
                torch.onnx.export(runtime, (x,), buf, dynamo=False, opset_version=OPSET,
                                  input_names=["input"], output_names=["logits"],
                                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
            blobs[FILES["onnx"]] = buf.getvalue()
    # what this export writes (a re-export replaces only these; module doc)
    doc["files"] = {**{n: None for n in ALWAYS_WRITTEN},
                    **{n: hashlib.sha256(b).hexdigest() for n, b in blobs.items()}}
    write_json(out / FILES["json"], doc)
    for name, data in blobs.items():
        write_bytes(out / name, data)
    return y


def verify(out_dir: str | Path, reference: Any = None, model_for_missing_weights: Any = None,
           _shown_as: Path | None = None) -> dict:
    """Check the artifacts in ``out_dir`` against ``spec.json`` (module doc); write
    ``verify.json``; raise :class:`ExportError` naming the first failed check. ``ok`` is True
    when no check failed; checks that could not run are listed under ``skipped``.

    Args:
        out_dir: a folder written by :func:`export` (its ``spec.json`` at least).
        reference: the model's output on the verification sample to compare the rebuilt model
            with; None: the reference output recorded in ``spec.json``.
        model_for_missing_weights: a model whose weights stand in when the folder has no
            ``weights.pt``; None: the checks that need weights are skipped.
        _shown_as: the folder name used in the error message (internal).

    Returns:
        The report, as written to ``verify.json``: ``ok``, ``arch_id``, ``weights`` (trained,
        source), ``checks`` (one dict per check: name, ``ok`` True/False/None, details),
        ``skipped`` (the names of checks that could not run) and ``verified_with`` (versions).

    Raises:
        ExportError: ``spec.json`` is not of the export format, or a check failed (the first
            one named, with its details; ``verify.json`` is written first).
        SpecError: the spec in ``spec.json`` cannot be read.
        OSError: ``spec.json`` is missing or a file cannot be read or written."""
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


# ---------------------------------------------------------------------------------------------
# exporting what a caller names: a run's trials or one spec (igcv-export as a call)

VARIANTS = ("target", "proxy")  # the spec budgets were counted on; the proxy's data-set variant
DEPLOY_MODES = ("none", "fold", "auto", "all")
ACCEPTED_WEIGHTS = ("igcv-train's weights.pt or checkpoint.pt, an igcv-export weights.pt or a "
                    "plain state_dict")


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """The formats of a comma-separated text (``"json,onnx"``) or a sequence of names;
    InputError unless it is a non-empty subset of :data:`FORMATS`."""
    text = formats if isinstance(formats, str) else ",".join(str(f) for f in formats)
    fs = tuple(f.strip() for f in text.split(",") if f.strip())
    bad = [f for f in fs if f not in FORMATS]
    if bad or not fs:
        raise InputError(f"--format {text!r}; accepted: a comma-separated subset of "
                         f"{','.join(FORMATS)}")
    return fs


def select_trials(run: RunDir, trial: int | None = None, top: int | None = None,
                  pareto: bool = False) -> list[dict]:
    """The architectures of ``run`` to export, one row each (its first-rung row of the trials
    table, with ``ranked_by``: :func:`rank_architectures`): ``trial``, the ``top`` best complete
    ones, the Pareto front, or by default the best (``best.json``: with the ladder its confirmed
    winner). A run that used the ladder has several rows per architecture (its promotion and
    confirmation trainings, rung >= 1, under the same trial number); each architecture is
    selected once, and ``top`` ranks by the most-trained score (:func:`rank_architectures`), so
    that ``top=1`` is ``best.json``'s architecture and ``top=N`` gives N distinct ones where the
    run has them. RunError or InputError (one line) when the selection is empty or refused."""
    from ..search.runstore import BEST_JSON, PARETO_JSON, RunError, load_trials
    df = load_trials(run.path)
    score, sign = _objective(run.meta)
    first = df[df.rung.fillna(0) == 0]  # one row per sampled architecture
    done = first[first.status == "complete"]
    if trial is not None:
        if first[first.number == trial].empty or not run.spec_file(trial).is_file():
            evaluated = ", ".join(str(n) for n in done.number) or "none"
            raise RunError(f"--trial {trial}: not an evaluated trial of {run.path} "
                           f"(complete trials: {evaluated})")
        numbers = [trial]
    elif top is not None:
        if top < 1:
            raise InputError(f"--top {top}; accepted: an integer >= 1")
        numbers = [r["number"] for r in rank_architectures(df, score, sign)][:top]
    elif pareto:
        numbers = [r["number"] for r in json.loads((run.path / PARETO_JSON).read_text())]
    else:
        best_file = run.path / BEST_JSON
        best = json.loads(best_file.read_text()) if best_file.is_file() else None
        if best is None:
            raise RunError(f"{run.path} has no complete trial to export yet")
        numbers = [best["number"]]
    ranked = {r["number"]: r for r in rank_architectures(df, score, sign, unique=False)}
    rows, seen = [], set()
    for n in numbers:
        row = first[first.number == n]
        if row.empty:
            continue
        r = {k: (None if _isna(v) else v) for k, v in row.head(1).to_dict("records")[0].items()}
        if r["number"] in seen or (r.get("arch_id") is not None and r["arch_id"] in seen):
            continue  # each architecture once
        seen |= {r["number"], r.get("arch_id")}
        rk = ranked.get(int(r["number"]))
        r["ranked_by"] = None if rk is None else {
            "score": score, "rung": rk["rung"], "mean": rk["mean"], "runs": rk["runs"]}
        rows.append(r)
    if not rows:
        raise RunError(f"{run.path}: nothing to export for this selection")
    return rows


def _isna(v: Any) -> bool:
    import pandas as pd
    return not isinstance(v, (list, dict)) and bool(pd.isna(v))


def _objective(meta: dict) -> tuple[str, int]:
    """The score column the search ranked by and its sign (1: higher is better; -1 for
    ``val_loss`` / ``tse``), as the search's :class:`~igcv_nas.search.trials.Objective`."""
    from .report import score_column
    from ..search.settings import Settings
    score = score_column(meta)  # RunError for unreadable settings
    return score, Settings.from_dict(meta["settings"]).objective_fn.sign


def rank_architectures(df, score: str, sign: int = 1, unique: bool = True) -> list[dict]:
    """The architectures of a trials table whose first-rung training completed, best first, as
    the search ranks them (:meth:`igcv_nas.search.engine.Engine.best`,
    :class:`igcv_nas.search.trials.Ladder`): by the highest rung each completed -- the
    confirmation's fresh-seed re-trainings, then the promotion, then the first rung alone -- and
    within a rung by the mean ``score`` over its complete trainings there (``sign`` -1: lower is
    better), then fewer MACs, then the earlier trial. The first is the confirmed winner of a
    ladder run (``best.json``). Each entry: ``number``, ``arch_id``, ``rung``, ``mean``, ``runs``
    (the trainings averaged); ``unique``: one entry per arch id (the best-ranked)."""
    import statistics
    rung = df.rung.fillna(0).astype(int)
    ok = df[(df.status == "complete") & df[score].notna()]
    first = ok[rung[ok.index] == 0]
    out = []
    for _, base in first.drop_duplicates("number").iterrows():
        runs = ok[ok.number == base.number]
        top_rung = int(rung[runs.index].max())
        vals = [float(v) for v in runs[rung[runs.index] == top_rung][score]]
        out.append({"number": int(base.number),
                    "arch_id": None if _isna(base.arch_id) else str(base.arch_id),
                    "rung": top_rung, "mean": statistics.fmean(vals), "runs": len(vals),
                    "macs": None if _isna(base.macs) else int(base.macs)})
    out.sort(key=lambda r: (-r["rung"], -sign * r["mean"],
                            r["macs"] if r["macs"] is not None else float("inf"), r["number"]))
    kept, seen = [], set()
    for r in out:
        r.pop("macs")
        if unique and r["arch_id"] is not None:
            if r["arch_id"] in seen:
                continue
            seen.add(r["arch_id"])
        kept.append(r)
    return kept


def load_weights(path: str | os.PathLike) -> tuple[dict, bool]:
    """``(state_dict, trained)`` of a weights file (:data:`ACCEPTED_WEIGHTS`); InputError (one
    line) when it is none."""
    import pickle

    import torch
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"--weights {path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"--weights {path}: a folder, not a file; accepted: "
                         f"{ACCEPTED_WEIGHTS}") from None
    except Exception as e:  # noqa: BLE001 - whatever unpickling a foreign file raises
        if isinstance(e, pickle.UnpicklingError) and "weights_only" in str(e):
            e = ValueError("it holds objects other than tensors and plain containers")
        first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise InputError(f"--weights {path}: not a torch weights file (torch.load: "
                         f"{type(e).__name__}: {first[:160]}); "
                         f"accepted: {ACCEPTED_WEIGHTS}") from None
    trained = True
    if isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict):
        trained = blob.get("trained", True) is not False  # an untrained igcv-export weights.pt
        blob = blob["state_dict"]
    elif isinstance(blob, dict) and isinstance(blob.get("model"), dict):
        blob = blob["model"]
    tensors = isinstance(blob, dict) and all(isinstance(v, torch.Tensor) for v in blob.values())
    if not (tensors and blob):
        raise InputError(f"--weights {path}: holds no state_dict; accepted: {ACCEPTED_WEIGHTS}")
    return blob, trained


def check_fits(state: dict, spec: NetworkSpec, path: str | os.PathLike) -> None:
    """InputError naming the first mismatch when ``state`` is not weights of ``spec``."""
    from ..nn.build import build_model
    try:
        build_model(spec).load_state_dict(state)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = lines[1] if len(lines) > 1 else lines[0]
        raise InputError(f"--weights {path}: not weights of arch {spec.arch_id} "
                         f"({why[:200]})") from None


@dataclass(frozen=True)
class ExportJob:
    """One architecture to export: its folder name under the output root, spec, provenance."""
    name: str
    spec: NetworkSpec
    provenance: dict


@dataclass(frozen=True)
class ExportResult:
    """One export done: its folder, the verification report (None when it failed), the error
    (None when it verified) and the spec file to train it from.

    Attributes:
        name: the folder name under the output root (``<trial>-<arch id>`` or ``<arch id>``).
        out: the export's folder.
        report: the verification report of :func:`export`; None when it failed.
        error: the :class:`ExportError` of a failed export; None when it verified.
        spec_json: the spec file to train it from (its ``spec.json``, or the source spec file
            when ``json`` was not among the formats).
    """
    name: str
    out: Path
    report: dict | None
    error: ExportError | None
    spec_json: Path

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def trained(self) -> bool:
        """Whether the exported weights are trained (False for the initialisation)."""
        return bool(self.report and self.report["weights"]["trained"])


def run_jobs(run: RunDir, rows: list[dict], variant: str) -> list[ExportJob]:
    """The jobs of ``rows`` of ``run`` (:func:`select_trials`): each trial's spec at the target
    (``variant="target"``) or the proxy's variant, with the run's provenance."""
    meta = run.meta
    jobs = []
    for row in rows:
        n = int(row["number"])
        f = run.spec_file(n) if variant == "target" else run.proxy_spec_file(n)
        prov = {"run": str(run.path), "trial": n, "variant": variant,
                "scores": {k: row[k] for k in row
                           if k in ("val_acc", "best_val_acc", "epochs")
                           or str(k).startswith("zc_")},
                "ranked_by": row.get("ranked_by"),
                "trial_row": {k: row[k] for k in ("status", "macs", "params", "latency_ms",
                                                  "measured_latency_ms", "node")},
                "space": meta.get("space"), "settings": meta.get("settings"),
                "search_versions": meta.get("versions")}
        jobs.append(ExportJob(f"{n:05d}-{row['arch_id']}", load(f), prov))
    return jobs


def prepare_export(source: NetworkSpec | str | os.PathLike, out: str | os.PathLike, *,
                   trial: int | None = None, top: int | None = None, pareto: bool = False,
                   formats: str | Sequence[str] = FORMATS, variant: str = "target",
                   weights: str | os.PathLike | None = None,
                   deploy: str = "none") -> PreparedExport:
    """Check an export completely and return it prepared (nothing created).

    ``source``: a run directory of ``igcv-search`` (``trial``, ``top`` or ``pareto`` select its
    trials; default its best one), a spec JSON file, a zoo name or a
    :class:`~igcv_nas.arch.spec.NetworkSpec`. ``out``: the output root; each architecture goes to
    ``OUT/<trial>-<arch id>/`` (``OUT/<arch id>/`` for a spec). ``formats``: a subset of
    :data:`FORMATS` (a sequence or ``"json,onnx"``). ``variant``: ``target`` or ``proxy`` (the
    data set's variant the proxy trained). ``weights``: trained weights for a single export
    (:func:`load_weights`, checked against the spec); default the initialisation. ``deploy``:
    :data:`DEPLOY_MODES`.

    Raises an :class:`igcv_nas.errors.IGCVError` (one line, as ``igcv-export`` prints it) for
    anything it refuses, in the command's order; an OSError for a file the OS refuses."""
    fs = parse_formats(formats)
    if variant not in VARIANTS:
        raise InputError(f"--variant {variant!r}; accepted: {', '.join(VARIANTS)}")
    if deploy not in DEPLOY_MODES:
        raise InputError(f"--deploy {deploy!r}; accepted: {', '.join(DEPLOY_MODES)}")
    is_spec = isinstance(source, NetworkSpec)
    shown = spec_label(source) if is_spec else os.fspath(source)
    if not is_spec and Path(shown).is_dir():
        from ..search.runstore import RunDir
        run = RunDir.open(source)
        jobs = run_jobs(run, select_trials(run, trial, top, pareto), variant)
    else:
        if trial is not None or top is not None or pareto:
            raise InputError("--trial/--top/--pareto select trials of a run directory, "
                             f"and {shown} is not one")
        spec = resolve_valid(source)
        jobs = [ExportJob(spec.arch_id, spec, {"source": str(shown)})]
    state, trained = None, False
    if weights is not None:
        if len(jobs) != 1:
            raise InputError("--weights applies to a single export; "
                             f"this selection has {len(jobs)}")
        state, trained = load_weights(weights)
        check_fits(state, jobs[0].spec, weights)
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise InputError(f"--out {root} exists and is not a folder")
    for job in jobs:  # nothing the export did not write is ever replaced (module doc)
        check_replaceable(root / job.name, written_names(fs))
    return PreparedExport(jobs, root, fs, deploy, state, trained,
                          None if weights is None else os.fspath(weights),
                          None if is_spec else Path(shown))


@dataclass
class PreparedExport:
    """A checked export (:func:`prepare_export`); :meth:`run` writes it.

    Attributes:
        jobs: the architectures to export, in order.
        out: the output root.
        formats: the formats to write (:data:`FORMATS`).
        deploy: the deployment mode (:data:`DEPLOY_MODES`).
        state_dict: the weights of a single export; None: the initialisation.
        trained: whether ``state_dict`` is trained weights.
        weights: the weights file named; None without one.
        source: the source named (a run directory or spec file); None for a spec object.
    """
    jobs: list[ExportJob]
    out: Path
    formats: tuple[str, ...]
    deploy: str
    state_dict: dict | None = field(repr=False)
    trained: bool
    weights: str | None
    source: Path | None  # the source named (None for a spec object)

    def run(self, on_result: Callable[[ExportResult], None] | None = None) -> list[ExportResult]:
        """Export and verify every job (:func:`export`), in order; an export that fails
        (:class:`ExportError`) is recorded in its result and leaves no folder, and the others
        still run. ``on_result`` is called after each. The output root is created only when
        something is exported (an interruption included: an empty root it created is removed).

        Args:
            on_result: called with each :class:`ExportResult` as soon as it is done.

        Returns:
            One :class:`ExportResult` per job, in order.

        Raises:
            ForeignFileError: an output folder gained a file an export did not write since
                :func:`prepare_export` checked it.
            OSError: a file the OS refuses to write."""
        created_root = not self.out.exists()
        results: list[ExportResult] = []
        try:
            for job in self.jobs:
                out = self.out / job.name
                spec_json = (out / FILES["json"] if "json" in self.formats or self.source is None
                             else self.source)
                try:
                    rep = export(job.spec, out, self.formats, self.state_dict, job.provenance,
                                 deploy_mode=self.deploy, weights_source=self.weights,
                                 trained=self.trained if self.state_dict is not None else None)
                    res = ExportResult(job.name, out, rep, None, spec_json)
                except ExportError as e:
                    res = ExportResult(job.name, out, None, e, spec_json)
                results.append(res)
                if on_result is not None:
                    on_result(res)
        finally:
            if created_root and self.out.is_dir() and not any(self.out.iterdir()):
                self.out.rmdir()  # nothing was exported: leave no empty folder either
        return results


def export_source(source: NetworkSpec | str | os.PathLike, out: str | os.PathLike,
                  **kw: Any) -> list[ExportResult]:
    """:func:`prepare_export` (same keywords) and :meth:`PreparedExport.run` in one call.

    Args:
        source: a run directory, a spec JSON file, a zoo name or a
            :class:`~igcv_nas.arch.spec.NetworkSpec` (:func:`prepare_export`).
        out: the output root.
        **kw: the keywords of :func:`prepare_export` (``trial``, ``top``, ``pareto``,
            ``formats``, ``variant``, ``weights``, ``deploy``).

    Returns:
        One :class:`ExportResult` per architecture, in order; a failed export is recorded in
        its result (``error``), not raised.

    Raises:
        IGCVError: anything :func:`prepare_export` refuses (InputError, RunError, SpecError,
            ForeignFileError, ...), before anything is written.
        OSError: a file the OS refuses."""
    return prepare_export(source, out, **kw).run()
