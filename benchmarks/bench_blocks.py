"""Forward + backward time of single blocks: IGC variants against MAC-matched MobileNetV2 blocks.

Blocks (all stride 1, in == out channels, residual, at the same resolution):

* ``igc``         -- IGCV2 chain (``zoo.igc_chain``): channel-wise 3x3, then 1x1 group convs with
                     8 channels per group and interleave (channel shuffle) permutations between
                     them.
* ``igcv3``       -- IGCV3 block (``zoo.igcv3_block``), t = 6, G1 = G2 = 2.
* ``igc-uneven``  -- channel-wise 3x3, then two 1x1 convs with uneven groups (8 and 24 channels)
                     and a ``complement`` permutation (an index gather, not a shuffle).
* ``mbconv``      -- for each IGC block, a MobileNetV2 inverted residual with the same channels
                     whose expansion width is chosen so its MACs are as close as possible; plus
                     the standard t = 6 block for reference.

MACs and params come from ``igcv_nas.arch.cost`` (MACs per sample, batch 1). Each timing is the
median over ``--reps`` iterations after ``--warmup`` iterations; the blocks are timed interleaved
(one iteration of every block per round) so that machine drift hits all of them alike. One iteration
is ``y = block(x); y.backward(dy)`` in train mode with ``x.requires_grad`` (the input gradient is
computed, as inside a network).

Permutation share: the same block (same weights) is also timed with its permutations removed
(``ConvBN.perm = None``), right after the block in every round; the permutation time is the median
of these paired differences and the share is that over the block's median time. This is a removal
measurement, not a profiler attribution; on a noisy machine it can come out slightly negative, so
the quartiles of the paired differences are printed too.

Usage: python benchmarks/bench_blocks.py [--batch 32] [--res 32] [--reps 15] [--threads N]
       [--channels-last]
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch
from torch import nn

from igcv_nas.arch import cost, zoo
from igcv_nas.nn.build import ConvBN, build_block
from igcv_nas.arch.spec import Block, NetworkSpec, Stem, block_from_dict
from igcv_nas.arch.validation import complementary


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def block_cost(block: Block, res: int) -> cost.BlockCost:
    """igcv_nas.arch.cost of one block at input resolution ``res`` (via a one-block network)."""
    spec = NetworkSpec(input_size=res, num_classes=1, stem=Stem(block.in_chs, 1, 1),
                       stages=((block,),), head_chs=0)
    return cost.count(spec, per_block=True).blocks[0]


def mbconv(c: int, e: int) -> Block:
    return block_from_dict({"kind": "mbconv", "in_chs": c, "out_chs": c, "stride": 1,
                            "expand_chs": e, "kernel": 3})


def matched_mbconv(target: Block, res: int) -> Block:
    """The mbconv with the target's channels whose MACs are closest to the target's."""
    want = block_cost(target, res).macs
    c = target.in_chs
    return min((mbconv(c, e) for e in range(1, 12 * c + 1) if e != c),
               key=lambda b: abs(block_cost(b, res).macs - want))


def igc_blocks() -> list[tuple[str, str, Block]]:
    chain = zoo.igc_chain(128, 128, 1, k=8)
    chain["residual"] = True
    uneven = {"kind": "igc", "in_chs": 128, "residual": True, "layers": [
        {"out_chs": 128, "kernel": 3, "groups": 128, "act": False},
        {"out_chs": 128, "kernel": 1, "groups": [[4, 8, 8], [4, 24, 24]],
         "perm": {"scheme": "complement"}, "act": False},
        {"out_chs": 128, "kernel": 1, "groups": [[4, 24, 24], [4, 8, 8]], "act": True}]}
    return [
        ("igc", "IGCV2 C=128 dw3x3+3x(1x1 G=16) L=4", block_from_dict(chain)),
        ("igcv3", "C=64 t=6 G1=G2=2", block_from_dict(zoo.igcv3_block(64, 64, 1, 6))),
        ("igc-uneven", "C=128 dw3x3+2x(1x1 4x8+4x24) L=3", block_from_dict(uneven)),
    ]


def strip_perms(module: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``module`` (same weights) without permutations, and how many were removed."""
    m, n = copy.deepcopy(module), 0
    for sub in m.modules():
        if isinstance(sub, ConvBN) and sub.perm is not None:
            sub.perm, n = None, n + 1
    return m, n


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--res", type=int, default=32, help="input resolution (CIFAR-like: 32 or 16)")
    ap.add_argument("--reps", type=int, default=15, help="timed iterations (median reported)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--channels-last", action="store_true", help="channels_last input and weights")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format

    # (name, config, spec block, matched-baseline key)
    rows: list[tuple[str, str, Block, str | None]] = []
    for name, config, b in igc_blocks():
        base = matched_mbconv(b, args.res)
        rows.append((name, config, b, f"mbconv~{name}"))
        rows.append((f"mbconv~{name}", f"C={base.in_chs} e={base.expand_chs} (MACs matched)",
                     base, None))
    rows.append(("mbconv", "C=64 t=6 (MobileNetV2 reference)", mbconv(64, 384), None))

    # modules to time: every block, plus every block that has permutations without them
    timed: dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor]] = {}
    n_perms: dict[str, int] = {}
    for name, _, b, _ in rows:
        m = build_block(b, "relu6").train().to(memory_format=fmt)
        x = torch.randn(args.batch, b.in_chs, args.res, args.res).to(memory_format=fmt)
        with torch.no_grad():
            dy = torch.randn_like(m(x))
        x.requires_grad_(True)
        timed[name] = (m, x, dy)
        stripped, n_perms[name] = strip_perms(m)
        if n_perms[name]:
            timed[name + "/noperm"] = (stripped, x, dy)

    samples: dict[str, list[float]] = {k: [] for k in timed}
    order = list(timed.items())
    for it in range(args.warmup + args.reps):
        # alternate the order every round: a block and its no-permutation copy stay adjacent and
        # each runs first half of the time
        for key, (m, x, dy) in (order if it % 2 == 0 else order[::-1]):
            for p in m.parameters():
                p.grad = None
            x.grad = None
            t0 = time.perf_counter()
            m(x).backward(dy)
            t1 = time.perf_counter()
            if it >= args.warmup:
                samples[key].append(t1 - t0)
    ms = {k: 1e3 * statistics.median(v) for k, v in samples.items()}
    # permutation time: median of paired differences (a block and its copy without permutations
    # run back to back in every round, so slow drift of the machine cancels)
    perm_ms: dict[str, tuple[float, float, float]] = {}
    for key in timed:
        if key + "/noperm" in timed:
            d = sorted(1e3 * (a - b) for a, b in zip(samples[key], samples[key + "/noperm"]))
            q = statistics.quantiles(d, n=4) if len(d) > 1 else [d[0]] * 3
            perm_ms[key] = (statistics.median(d), q[0], q[2])

    print("bench_blocks: forward+backward per iteration, train mode, median of "
          f"{args.reps} after {args.warmup} warm-up")
    print(f"machine: {cpu_model()} | torch {torch.__version__} | threads {torch.get_num_threads()}"
          f" | python {platform.python_version()}")
    print(f"input: batch {args.batch}, {args.res}x{args.res}, "
          f"{'channels_last' if args.channels_last else 'NCHW (contiguous)'}, fp32")
    print("MACs/params: igcv_nas.arch.cost, per sample (batch 1); vs mbconv: time / time of the "
          "MAC-matched mbconv of the same run")
    print("perm share: measured by REMOVAL (not a profiler): the same block (same weights) without "
          "its permutations runs right after it in every round; perm ms = median of the paired "
          "differences, perm % = perm ms / block ms, [quartiles] of the paired differences in %")
    head = (f"{'block':<18} {'config':<36} {'mode':<8} {'MACs':>8} {'params':>7} {'ms':>8} "
            f"{'ms/GMAC':>8} {'vs mbconv':>9} {'perms':>5} {'perm ms':>8} {'perm %':>7} quartiles")
    print(head)
    print("-" * len(head))
    for name, config, b, base in rows:
        c = block_cost(b, args.res)
        mode = complementary(b.ops)[0]
        t = ms[name]
        gmacs = c.macs * args.batch / 1e9
        ratio = f"{t / ms[base]:.2f}x" if base else "--"
        if n_perms[name]:
            pt, q1, q3 = perm_ms[name]
            perm = (f"{n_perms[name]:>5} {pt:>8.2f} {100 * pt / t:>6.1f}% "
                    f"[{100 * q1 / t:.0f}, {100 * q3 / t:.0f}]%")
        else:
            perm = f"{0:>5} {'--':>8} {'--':>7}"
        print(f"{name:<18} {config:<36} {mode:<8} {cost.human(c.macs):>8} {c.params:>7} "
              f"{t:>8.2f} {t / gmacs:>8.1f} {ratio:>9} {perm}")
    print("mode: complementary condition of the block's conv chain (exact/relaxed = dense product)")


if __name__ == "__main__":
    main()
