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

from ..arch import cost as _cost
from ..arch.inspection import inspect_spec, rows
from ._common import fail, run_cli


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
    r = inspect_spec(args.source, args.target, args.classes)
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
