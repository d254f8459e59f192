"""``igcv-inspect SPEC.json | ZOO_NAME [--target 224] [--classes N] [--json]``

Validation result, complementary mode and balance per block, and the MACs / FLOPs / params
of the stem, every block, the head and the classifier of a spec or a reference network (these
rows add up to the totals). Exit code 0 when the spec is valid, 2 (one-line error on stderr)
when it cannot be read or violates a rule.
"""
from __future__ import annotations

import argparse
import json
import sys

from .. import cost as _cost
from ..spec import NetworkSpec, SpecError
from ..validation import check
from ._common import fail, resolve_spec, run_cli


def _layer(label: str, kind: str, res: tuple[int, int], macs: int, params: int) -> dict:
    return {"label": label, "kind": kind, "resolution": list(res), "macs": macs,
            "flops": 2 * macs, "params": params}


def _outer_rows(spec: NetworkSpec, c: _cost.Cost) -> dict:
    """Stem, head and classifier rows of a valid spec, as :func:`igcv_nas.cost.count` gives
    them (``per_block=True``); with the blocks' rows they add up to its totals. The global
    average pool, BN, activations and permutations cost 0 MACs and have no parameters: no
    row."""
    s, h, k = c.stem, c.head, c.classifier
    rows = {"stem": _layer("stem", f"conv {spec.stem.kernel}x{spec.stem.kernel}/"
                           f"{spec.stem.stride}", (s.in_res, s.out_res), s.macs, s.params)}
    rows["head"] = (_layer("head", "conv 1x1", (h.in_res, h.out_res), h.macs, h.params)
                    if h is not None else None)
    rows["classifier"] = _layer("classifier", f"avg pool, linear {spec.feature_chs}->"
                                f"{spec.num_classes}", (k.in_res, k.out_res), k.macs, k.params)
    return rows


def _report(spec: NetworkSpec) -> dict:
    rep = check(spec)
    c = _cost.count(spec, per_block=True) if rep.ok else None
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


def _print_table(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{r['name'] or 'spec'}  id {r['arch_id']}  @ {r['input_size']}x"
                    f"{r['input_size']}, {r['num_classes']} classes")
    for col in ("block", "kind", "res", "complementary", "paths", "balance", "MACs", "params"):
        numeric = col in ("MACs", "params", "paths", "balance")
        t.add_column(col, justify="right" if numeric else "left")
    for b in rows(r):
        res = f"{b['resolution'][0]}->{b['resolution'][1]}" if "resolution" in b else "-"
        paths = f"{b['paths'][0]}..{b['paths'][1]}" if "paths" in b else "-"
        bal = f"{b['balance']:.2f}" if b.get("balance") is not None else "-"
        t.add_row(b["label"], b["kind"], res, b.get("complementary") or "-", paths, bal,
                  f"{b['macs']:,}" if "macs" in b else "-",
                  f"{b['params']:,}" if "params" in b else "-",
                  end_section=b["label"] == "classifier")
    if r["valid"]:
        t.add_row("total", "", "", "", "", "", f"{r['macs']:,}", f"{r['params']:,}")
    con = Console(highlight=False)
    if not con.is_terminal:  # a pipe or a file: as wide as the table, never wrapped at 80
        con = Console(highlight=False, width=max(80, Console(width=10_000).measure(t).maximum))
    con.print(t)
    if r["valid"]:
        con.print(f"valid; complementary: {r['complementary']}", soft_wrap=True)
        con.print(f"MACs {r['macs']:,} ({_cost.human(r['macs'])})   FLOPs = 2 x MACs "
                  f"{r['flops']:,}   params {r['params']:,} ({_cost.human(r['params'])})   "
                  f"peak activations {_cost.human(r['peak_act_bytes'], 'B')} (fp32)   "
                  f"permutation traffic {_cost.human(r['perm_bytes'], 'B')}", soft_wrap=True)
        con.print("MACs count conv + linear multiply-accumulates (MobileNetV2 1.0 = 300.77M); "
                  "the global average pool, BN, activations and permutations cost none.",
                  soft_wrap=True)
    else:
        for v in r["violations"]:
            con.print(f"violation: {v}", soft_wrap=True, markup=False)


def main(argv: list[str] | None = None) -> int:
    return run_cli("igcv-inspect", _main, argv)


def _main(argv: list[str] | None) -> int:
    ap = argparse.ArgumentParser(prog="igcv-inspect", description=__doc__.split("\n\n")[1])
    ap.add_argument("--debug", action="store_true", help="on an internal error, show the traceback")
    ap.add_argument("source",
                    help="a spec JSON file or a zoo name (e.g. mobilenet_v2, igcv3_d_0.7_cifar)")
    ap.add_argument("--target", type=int, default=None,
                    help="input resolution at which to count (default: the spec's own)")
    ap.add_argument("--classes", type=int, default=None,
                    help="number of classes (default: the spec's)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    try:
        spec = resolve_spec(args.source)
    except SpecError as e:
        return fail("igcv-inspect", str(e))
    for flag, v in (("--target", args.target), ("--classes", args.classes)):
        if v is not None and v <= 0:
            return fail("igcv-inspect", f"{flag} {v} must be a positive integer")
    spec = spec.with_target(args.target, args.classes)
    r = _report(spec)
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        _print_table(r)
    if not r["valid"]:
        return fail("igcv-inspect", f"{args.source}: {len(r['violations'])} violation(s): "
                                    + "; ".join(r["violations"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
