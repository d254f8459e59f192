"""What ``igcv-inspect`` shows of a spec: the validation result, the complementary mode and the
balance of every block, and the MACs / FLOPs / params of the stem, every block, the head and the
classifier (these rows add up to the totals of :func:`igcv_nas.arch.cost.count`).

:func:`inspect_spec` is the command as a call (``igcv-inspect`` is parse -> this -> print)::

    from igcv_nas.arch.inspection import inspect_spec, rows

    r = inspect_spec("igcv3_d", target=32, classes=10)
    r["valid"], r["macs"], [row["label"] for row in rows(r)]

It returns the report that ``igcv-inspect --json`` prints: ``name``, ``arch_id``, ``input_size``,
``num_classes``, ``valid``, ``complementary``, ``violations`` (readable strings) and ``blocks``; for
a valid spec also ``stem``, ``head`` (None without one), ``classifier`` and the totals of
:meth:`igcv_nas.arch.cost.Cost.as_dict`. A spec that breaks a rule is reported (``valid: false`` and
its violations), not raised; a spec that cannot be read is a :class:`~igcv_nas.arch.spec.SpecError`
and a bad ``target`` or ``classes`` an :class:`~igcv_nas.errors.InputError`, with ``igcv-inspect``'s
one-line messages.
"""
from __future__ import annotations

import os

from . import cost
from ..errors import InputError
from .sources import resolve_spec
from .spec import NetworkSpec
from .validation import check

__all__ = ["inspect_spec", "report", "rows"]


def inspect_spec(source: NetworkSpec | str | os.PathLike, target: int | None = None,
                 classes: int | None = None) -> dict:
    """The report that ``igcv-inspect --json`` prints (see the module doc).

    Args:
        source: a :class:`~igcv_nas.arch.spec.NetworkSpec`, a spec JSON file or a zoo name
            (:func:`igcv_nas.arch.sources.resolve_spec`).
        target: input resolution to count at (default: the spec's own).
        classes: number of classes (default: the spec's own).

    Returns:
        The report as a dict: ``valid``, ``violations``, ``complementary``, the totals and the
        ``stem``, ``blocks``, ``head`` and ``classifier`` rows (:func:`rows` gives them in
        network order). A violation is in the report, not raised.

    Raises:
        SpecError: ``source`` cannot be read.
        InputError: ``target`` or ``classes`` is not a positive integer."""
    spec = source if isinstance(source, NetworkSpec) else resolve_spec(source)
    for flag, v in (("--target", target), ("--classes", classes)):
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
            raise InputError(f"{flag} {v} must be a positive integer")
    return report(spec.with_target(target, classes))


def _layer(label: str, kind: str, res: tuple[int, int], macs: int, params: int) -> dict:
    return {"label": label, "kind": kind, "resolution": list(res), "macs": macs,
            "flops": 2 * macs, "params": params}


def _outer_rows(spec: NetworkSpec, c: cost.Cost) -> dict:
    """Stem, head and classifier rows of a valid spec, as :func:`igcv_nas.arch.cost.count` gives
    them (``per_block=True``); with the blocks' rows they add up to its totals. The global
    average pool, BN, activations and permutations cost 0 MACs and have no parameters: no
    row."""
    s, h, k = c.stem, c.head, c.classifier
    assert s is not None and k is not None  # count(per_block=True) fills them
    rows: dict[str, dict | None] = {}
    rows["stem"] = _layer("stem", f"conv {spec.stem.kernel}x{spec.stem.kernel}/"
                          f"{spec.stem.stride}", (s.in_res, s.out_res), s.macs, s.params)
    rows["head"] = (_layer("head", "conv 1x1", (h.in_res, h.out_res), h.macs, h.params)
                    if h is not None else None)
    rows["classifier"] = _layer("classifier", f"avg pool, linear {spec.feature_chs}->"
                                f"{spec.num_classes}", (k.in_res, k.out_res), k.macs, k.params)
    return rows


def report(spec: NetworkSpec) -> dict:
    """The inspection report of ``spec`` as it is (module doc); a violation is in it, not
    raised."""
    rep = check(spec)
    c = cost.count(spec, per_block=True) if rep.ok else None
    blocks = []
    for i, bc in enumerate(rep.blocks):
        row = {"label": bc.label, "kind": bc.kind, "complementary": bc.mode,
               "paths": [bc.min_paths, bc.max_paths], "balance": bc.balance}
        if bc.example:
            row["unconnected_example"] = list(bc.example)
        if c is not None:
            b = c.blocks[i]
            row.update(resolution=[b.in_res, b.out_res], macs=b.macs, flops=b.flops,
                       params=b.params, perm_bytes=b.perm_bytes)
        blocks.append(row)
    out = {"name": spec.name, "arch_id": spec.arch_id, "input_size": spec.input_size,
           "num_classes": spec.num_classes, "valid": rep.ok, "complementary": rep.mode,
           "violations": [str(v) for v in rep.violations], "blocks": blocks}
    if c is not None:
        out.update(_outer_rows(spec, c))
        out.update(c.as_dict())
    return out


def rows(r: dict) -> list[dict]:
    """The cost rows of a report in network order: stem, blocks, head (when there is one),
    classifier; for a valid spec their MACs and params add up to ``r["macs"]``, ``r["params"]``."""
    if "stem" not in r:
        return list(r["blocks"])
    return [r["stem"], *r["blocks"], *([r["head"]] if r["head"] else []), r["classifier"]]
