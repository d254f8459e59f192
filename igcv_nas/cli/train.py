"""``igcv-train SPEC [--dataset cifar10] [--epochs 200] --out DIR [--resume]``

Final training of one architecture with a standard full recipe (the proxy trainer at full
budget): SGD with Nesterov momentum 0.9, batch 128, peak lr 0.1 after 5 warm-up epochs then
cosine decay, weight decay 5e-4 (none on batch norm and biases), label smoothing 0.1, random
crop (pad 4) + horizontal flip, channels_last, mixed precision on CUDA. Trains on the training
split (45,000 CIFAR images), reports validation accuracy after every epoch and the test-set
accuracy once at the end. The full state is checkpointed every epoch (``--resume`` continues it).

SPEC is a spec JSON (``igcv-search``'s ``trials/<n>/spec.json``, an ``igcv-export`` spec.json) or
a zoo name; a spec at another resolution is trained as the data set's variant (32x32: stem stride
1, stage 2 not downsampling). Writes to DIR: ``spec.json`` (what was trained), ``checkpoint.pt``,
``weights.pt`` (for ``igcv-export --weights``), ``history.csv`` and ``result.json``.
"""
from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

from ..data import DataError, load_splits, resolve_data_dir
from ..fileio import write_bytes, write_json, write_text
from ..spec import SpecError, from_dict
from ._common import OneLineParser, fail, resolve_spec, valid_spec

PROG = "igcv-train"


def _parser() -> OneLineParser:
    ap = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[1])
    ap.add_argument("spec", help="spec JSON file or zoo network name")
    ap.add_argument("--dataset", default="cifar10", help="cifar10 (default), cifar100 or an image folder")
    ap.add_argument("--data-dir", help="default $IGCV_DATA_DIR or ~/.cache/igcv-nas/data")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--warmup-epochs", type=float, default=5.0)
    ap.add_argument("--train-fraction", type=float, default=1.0,
                    help="use a fraction of the training split (quick checks)")
    ap.add_argument("--val-size", type=int, default=5000,
                    help="held-out validation images scored each epoch (default all 5,000)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import torch

    from ..build import build_model
    from ..space import to_cifar
    from ..train import GpuBatches, ProxyTrainer, TrainConfig, pick_device, seed_everything

    out = Path(args.out)
    try:
        spec = valid_spec(resolve_spec(args.spec), args.spec)
        for flag, v in (("--epochs", args.epochs), ("--batch-size", args.batch_size),
                        ("--val-size", args.val_size)):
            if v < 1:
                raise ValueError(f"{flag} {v}; accepted: an integer >= 1")
        if not 0 <= args.warmup_epochs < args.epochs:
            raise ValueError(f"--warmup-epochs {args.warmup_epochs}; accepted: 0 <= value < --epochs")
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
                          warmup=args.warmup_epochs / args.epochs, schedule="onecycle",
                          train_fraction=args.train_fraction, seed=args.seed,
                          device=str(pick_device(args.device)), channels_last=True, amp=True)
        if args.resume and not (out / "checkpoint.pt").is_file():
            raise ValueError(f"--resume: {out / 'checkpoint.pt'} does not exist")
        if not args.resume and out.exists() and any(out.iterdir()):
            raise ValueError(f"{out} exists and is not empty; continue it with --resume")
        splits = load_splits(args.dataset, resolve_data_dir(args.data_dir), val_size=5000, seed=0)
    except (SpecError, DataError, ValueError) as e:
        return fail(PROG, str(e))

    res = int(splits.train.x.shape[-1])
    if (spec.input_size, spec.num_classes) != (res, splits.num_classes):
        spec = to_cifar(spec, splits.num_classes, res)
        print(f"{PROG}: training the {args.dataset} variant ({res}x{res}, stem stride 1, stage 2 "
              f"not downsampling, {splits.num_classes} classes): arch id {spec.arch_id}", flush=True)
    if args.resume:
        trained = from_dict(json.loads((out / "spec.json").read_text())["spec"])
        if trained.arch_id != spec.arch_id:
            return fail(PROG, f"--resume: {out} trains arch {trained.arch_id}, not {spec.arch_id}")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "spec.json", {"spec": spec.to_dict(), "arch_id": spec.arch_id,
                                   "recipe": cfg.to_dict(), "dataset": args.dataset})
    seed_everything(args.seed)
    from ..proxy import val_subset
    trainer = ProxyTrainer(build_model(spec), val_subset(splits, args.val_size), cfg)
    if args.resume:
        try:
            trainer.load(out / "checkpoint.pt")
        except ValueError as e:
            return fail(PROG, f"--resume: {e}")
        print(f"{PROG}: resuming at epoch {trainer.epoch + 1}/{trainer.epochs}", flush=True)

    def on_epoch(rep) -> None:
        trainer.save(out / "checkpoint.pt")
        write_text(out / "history.csv", "epoch,steps,train_loss,val_acc,seconds\n" + "".join(
            f"{h.epoch},{h.steps},{h.train_loss:.5f},{h.val_acc:.5f},{h.seconds:.2f}\n"
            for h in trainer.history))
        print(f"epoch {rep.epoch}/{trainer.epochs}  loss {rep.train_loss:.4f}  val acc "
              f"{rep.val_acc:.4f}  {rep.seconds:.0f} s", flush=True)

    t0 = time.perf_counter()
    r = trainer.fit(on_epoch)
    test = GpuBatches(splits.test.x, splits.test.y, splits.mean, splits.std, trainer.device, 0, False)
    test_acc = trainer.evaluate(test)
    buf = io.BytesIO()
    torch.save({"state_dict": trainer.model.state_dict(), "arch_id": spec.arch_id, "trained": True}, buf)
    write_bytes(out / "weights.pt", buf.getvalue())
    result = {"arch_id": spec.arch_id, "dataset": args.dataset, "epochs": r.epochs,
              "val_acc": r.val_acc, "best_val_acc": r.best_val_acc, "test_acc": test_acc,
              "train_images": len(trainer.train.y), "seconds": r.seconds,
              "wall_seconds_this_run": time.perf_counter() - t0, "recipe": cfg.to_dict()}
    write_json(out / "result.json", result)
    print(f"{PROG}: val acc {r.val_acc:.4f}, test acc {test_acc:.4f} ({len(splits.test):,} test "
          f"images); weights in {out / 'weights.pt'} (igcv-export --weights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
