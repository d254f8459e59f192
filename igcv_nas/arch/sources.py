"""Where a spec comes from when a caller names it: a spec JSON file, a document holding one under
``"spec"`` (an ``igcv-export`` spec.json, an ``igcv-train`` output), or a zoo network name.

:func:`resolve_spec` reads it (bounded, one line :class:`~igcv_nas.arch.spec.SpecError` otherwise);
:func:`valid_spec` refuses one that breaks a rule, naming where it came from. Every command that
takes ``SPEC`` (``igcv-train``, ``igcv-export``, ``igcv-inspect``, ``igcv-latency``) and the
library calls behind them use these two, so a spec named from Python is read and refused the same
way.
"""
from __future__ import annotations

import os

from . import zoo
from .spec import NetworkSpec, SpecError, from_dict, parse_json, read_spec_file

__all__ = ["resolve_spec", "resolve_valid", "spec_label", "valid_spec"]


def resolve_spec(source: str | os.PathLike) -> NetworkSpec:
    """A spec JSON file -- a plain spec, or a document holding one under ``"spec"`` (an
    ``igcv-export`` spec.json, an ``igcv-train`` output) -- or a zoo network name
    (``igcv3_d_0.7_cifar``); SpecError (one line) otherwise. The file is read once, bounded
    (a regular file of at most MAX_SPEC_BYTES; FIFOs and devices are refused unread)."""
    if not isinstance(source, (str, os.PathLike)):
        raise SpecError(f"spec {source!r}; accepted: a NetworkSpec, a spec JSON file or a zoo "
                        f"network name")
    source = os.fspath(source)
    if os.path.lexists(source) or source.endswith(".json"):
        raw = read_spec_file(source)
        try:
            doc = parse_json(raw)
            if isinstance(doc, dict) and isinstance(doc.get("spec"), dict):
                doc = doc["spec"]
            return from_dict(doc)
        except SpecError as e:
            raise SpecError(f"{source}: {e}") from None
    try:
        return zoo.get(source)
    except zoo.ZooError as e:
        if e.bad_width:
            raise SpecError(str(e)) from None
        raise SpecError(f"{source!r} is neither a spec file nor a zoo network "
                        f"({', '.join(zoo.names())}, optionally _<width> and/or _cifar)") from None


def valid_spec(spec: NetworkSpec, source: str) -> NetworkSpec:
    """``spec`` when it passes validation; SpecError naming ``source`` and the first violation."""
    from .validation import check
    rep = check(spec)
    if not rep.ok:
        more = f" (and {len(rep.violations) - 1} more)" if len(rep.violations) > 1 else ""
        raise SpecError(f"{source}: {rep.violations[0]}{more}")
    return spec


def spec_label(spec: NetworkSpec) -> str:
    """How a spec given as an object is named in a message: its name, else ``spec <arch id>``."""
    return spec.name or f"spec {spec.arch_id}"


def resolve_valid(spec: NetworkSpec | str | os.PathLike) -> NetworkSpec:
    """A spec object, file or zoo name (:func:`resolve_spec`) that passes validation
    (:func:`valid_spec`); SpecError otherwise (a wrong type included)."""
    if isinstance(spec, NetworkSpec):
        return valid_spec(spec, spec_label(spec))
    return valid_spec(resolve_spec(spec), os.fspath(spec))
