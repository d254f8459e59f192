"""Deployment form per block type on the CPU: the built block (conv + BN), BN folded (sparse:
group convs + permutations), and the chain of 1x1 group convs collapsed into one dense 1x1
conv; inference at batch 1, median of --reps after --warmup. The 'auto' choice of
``igcv_nas.artifacts.deploy`` is the faster of the last two.

    python benchmarks/bench_export.py --res 28 --threads 1
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
from pathlib import Path

import torch

from igcv_nas.nn.build import build_block
from igcv_nas.artifacts.deploy import chains, deploy_block
from igcv_nas.evaluate.latency import measure_module

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_blocks import block_cost, igc_blocks  # noqa: E402  (same block configurations)


def _randomize_bn(m: torch.nn.Module) -> None:
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.normal_(0, 0.1)
            mod.running_var.uniform_(0.5, 2.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--res", type=int, default=28)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    a = ap.parse_args()
    torch.manual_seed(0)
    print(f"# bench_export: {platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, "
          f"{a.threads} thread(s), batch 1, {a.res}x{a.res}, median of {a.reps}")
    print(f"{'block':<12}{'config':<38}{'chains':>7}{'built ms':>10}{'folded ms':>11}"
          f"{'collapsed ms':>14}{'collapsed/folded':>18}{'1x1 MACs sparse->dense':>25}  auto")
    for name, config, spec in igc_blocks():
        blk = build_block(spec, "relu6").eval()
        _randomize_bn(blk)
        shape = (spec.in_chs, a.res, a.res)
        n = len(chains(blk))
        folded = deploy_block(copy.deepcopy(blk), "none")
        dense = deploy_block(copy.deepcopy(blk), "all")
        x = torch.randn(1, *shape)
        with torch.no_grad():
            ref = blk(x)
            for m in (folded, dense):
                assert (m(x) - ref).abs().max() <= 1e-4 * max(1.0, ref.abs().max()), name
        t = {k: measure_module(m, shape, "cpu", a.threads, 1, False, a.warmup, a.reps).median_ms
             for k, m in (("built", blk), ("folded", folded), ("dense", dense))}
        macs = block_cost(spec, a.res)
        pw = [op for op in spec.ops if op.kernel == 1]
        sparse_pw = (sum(op.in_chs * op.out_chs // sum(c for c, _, _ in op.groups) for op in pw)
                     * a.res ** 2 if n else 0)
        dense_pw = pw[0].in_chs * pw[-1].out_chs * a.res ** 2 if n else 0
        choice = "-" if not n else ("collapse" if t["dense"] < t["folded"] else "keep sparse")
        ratio = f"{t['dense'] / t['folded']:.2f}x" if n else "-"
        pw_txt = f"{sparse_pw / 1e6:.2f}M->{dense_pw / 1e6:.2f}M" if n else "-"
        print(f"{name:<12}{config:<38}{n:>7}{t['built']:>10.3f}{t['folded']:>11.3f}"
              f"{t['dense'] if n else float('nan'):>14.3f}{ratio:>18}{pw_txt:>25}  {choice}"
              f"   (block {macs.macs / 1e6:.2f}M MACs)")


if __name__ == "__main__":
    main()
