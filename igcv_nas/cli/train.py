"""igcv-train SPEC [--dataset cifar10] [--epochs 200] --out OUT [--resume]

Final training of one architecture with a standard full recipe (the proxy trainer at full
budget): SGD with Nesterov momentum 0.9, batch 128, peak lr 0.1 after a linear warm-up (default
min(5, epochs / 10) epochs: 5 for 50 epochs and more, 0.1 for --epochs 1) then cosine decay,
weight decay 5e-4 (none on batch norm and biases), label smoothing 0.1, random crop (pad 4) +
horizontal flip, channels_last, mixed precision on CUDA. Trains on the training split (45,000
CIFAR images), reports validation accuracy after every epoch and the test-set accuracy once at
the end, and warns when the loss diverged or the accuracy is at chance level. SPEC is a spec
JSON (igcv-search's trials/<n>/spec.json, an igcv-export spec.json) or a zoo name; a spec at
another resolution is trained as the data set's variant (32x32: stem stride 1, stage 2 not
downsampling). OUT is written only when the training ends: until then everything is in
OUT.partial (spec.json, checkpoint.pt after every epoch, history.csv); an interrupted training
continues from there with --resume, a failed one leaves nothing. OUT then holds spec.json (what
was trained), checkpoint.pt, weights.pt (for igcv-export --weights), history.csv and
result.json.
"""
from __future__ import annotations

import inspect
import io
import json
import math
import os
import shlex
import shutil
import sys
import time
from dataclasses import fields
from pathlib import Path

from ..errors import IGCVError, InputError
from ..data import load_splits, resolve_data_dir
from ..fileio import write_bytes, write_json, write_text
from ..spec import SpecError, from_dict
from ._common import OneLineParser, fail, resolve_spec, valid_spec, run_cli

PROG = "igcv-train"
WARMUP_EPOCHS, WARMUP_FRACTION = 5.0, 0.1  # default warm-up: min(5 epochs, 10% of the epochs)
EVAL_BATCH = {"cpu": 128, "cuda": 1000}  # see main(): batch 1000 is 3x slower on a CPU
LOG_EVERY_S = 30.0  # plain progress: a step line at most this often (besides the epoch lines)
CHANCE_FACTOR = 1.5  # an accuracy <= 1.5 / classes is at chance level


def default_warmup(epochs: int) -> float:
    """Warm-up epochs when --warmup-epochs is not given: min(5, epochs / 10)."""
    return min(WARMUP_EPOCHS, WARMUP_FRACTION * epochs)


def _parser() -> OneLineParser:
    ap = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[1])
    ap.add_argument("spec", help="spec JSON file or zoo network name")
    ap.add_argument("--dataset", default="cifar10",
                    help="cifar10 (default), cifar100 or an image folder")
    ap.add_argument("--data-dir", help="default $IGCV_DATA_DIR or ~/.cache/igcv-nas/data")
    ap.add_argument("--epochs", type=int, default=200, help="training epochs (default 200)")
    ap.add_argument("--batch-size", type=int, default=128, help="default 128")
    ap.add_argument("--lr", type=float, default=0.1, help="peak learning rate (default 0.1)")
    ap.add_argument("--weight-decay", type=float, default=5e-4, help="default 5e-4")
    ap.add_argument("--label-smoothing", type=float, default=0.1, help="default 0.1")
    ap.add_argument("--warmup-epochs", type=float, default=None,
                    help="epochs of linear lr warm-up, 0 <= value < --epochs (default "
                         "min(5, epochs / 10): 5 for 50 epochs and more, 0.1 for 1 epoch)")
    ap.add_argument("--train-fraction", type=float, default=1.0,
                    help="use a fraction (0, 1] of the training split (quick checks)")
    ap.add_argument("--val-size", type=int, default=5000,
                    help="held-out validation images scored each epoch (default all 5,000)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    ap.add_argument("--resume", action="store_true", help="continue the interrupted training "
                                                          "in OUT.partial")
    return ap


def partial_dir(out: Path) -> Path:
    """Where a training into ``out`` lives until it ends."""
    return out.with_name(out.name + ".partial")


# ---------------------------------------------------------------------------------------------
# progress

def _hms(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class TrainProgress:
    """Steps, images/s, loss and ETA: a live rich display on a terminal, else plain log lines
    (one per epoch, and a step line at most every LOG_EVERY_S seconds)."""

    def __init__(self, epochs: int, steps_per_epoch: int, total_steps: int, start_step: int,
                 batch_size: int, stream=None):
        from rich.console import Console
        self.epochs, self.spe, self.total = epochs, steps_per_epoch, total_steps
        self.stream = stream or sys.stdout
        self.console = Console(file=self.stream, highlight=False)
        self.live = self.console.is_terminal
        self.t0 = time.perf_counter()
        self.start_step = start_step
        self.step = start_step
        self.images0 = self.images = start_step * batch_size  # images trained before this run
        self.epoch_losses: list[float] = []
        self.last_log = self.t0
        self._bar = None
        if self.live:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeRemainingColumn)
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("steps"),
                                 TextColumn("{task.fields[info]}"), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=self.console, transient=True)
            self._total_task = self._bar.add_task("all", total=total_steps, completed=start_step,
                                                  info="")
            self._epoch_task = self._bar.add_task("epoch", total=steps_per_epoch, info="")
            self._bar.start()

    def rate(self) -> float:
        dt = time.perf_counter() - self.t0
        return (self.images - self.images0) / dt if dt > 0 else 0.0

    def eta(self) -> float | None:
        done = self.step - self.start_step
        if done <= 0:
            return None
        return (time.perf_counter() - self.t0) / done * (self.total - self.step)

    def on_step(self, r) -> None:
        self.step, self.images = r.step, r.images
        self.epoch_losses.append(r.loss)
        in_epoch = (r.step - 1) % self.spe + 1
        loss = sum(self.epoch_losses) / len(self.epoch_losses)
        if self._bar is not None:
            info = f"loss {loss:.4f}  {self.rate():,.0f} img/s"
            self._bar.update(self._total_task, completed=r.step, info=info)
            self._bar.update(self._epoch_task, completed=in_epoch,
                             description=f"epoch {r.epoch}/{self.epochs}", info="")
            return
        now = time.perf_counter()
        if now - self.last_log >= LOG_EVERY_S:
            self.last_log = now
            eta = self.eta()
            print(f"[{time.strftime('%H:%M:%S')}] epoch {r.epoch}/{self.epochs}  step "
                  f"{r.step}/{self.total} ({in_epoch}/{self.spe} of the epoch)  loss {loss:.4f}  "
                  f"{self.rate():,.0f} img/s  ETA {_hms(eta) if eta is not None else '-'}",
                  file=self.stream, flush=True)

    def on_epoch(self, rep, seconds: float) -> None:
        self.step, self.images = rep.steps, rep.images
        self.epoch_losses = []
        eta = self.eta()
        line = (f"epoch {rep.epoch}/{self.epochs}  steps {rep.steps}/{self.total}  loss "
                f"{rep.train_loss:.4f}  val acc {rep.val_acc:.4f}  {self.rate():,.0f} img/s  "
                f"{seconds:.0f} s  ETA {_hms(eta) if eta is not None else '-'}")
        self.last_log = time.perf_counter()
        if self._bar is not None:
            self._bar.console.print(line)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


# ---------------------------------------------------------------------------------------------

def _validate(args) -> None:
    for flag, v in (("--epochs", args.epochs), ("--batch-size", args.batch_size),
                    ("--val-size", args.val_size)):
        if v < 1:
            raise InputError(f"{flag} {v}; accepted: an integer >= 1")
    checks = (("--lr", args.lr, args.lr > 0, "a number > 0"),
              ("--weight-decay", args.weight_decay, args.weight_decay >= 0, "a number >= 0"),
              ("--label-smoothing", args.label_smoothing, 0 <= args.label_smoothing < 1,
               "0 <= value < 1"),
              ("--train-fraction", args.train_fraction, 0 < args.train_fraction <= 1,
               "0 < value <= 1"))
    for flag, v, ok, accepted in checks:
        if not (ok and math.isfinite(v)):
            raise InputError(f"{flag} {v}; accepted: {accepted}")
    if args.warmup_epochs is not None and not 0 <= args.warmup_epochs < args.epochs:
        raise InputError(f"--warmup-epochs {args.warmup_epochs}; accepted: 0 <= value < "
                         f"--epochs ({args.epochs})")


def _check_out(out: Path, resume: bool) -> None:
    part = partial_dir(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "a finished training" if (out / "result.json").is_file() else "not an empty folder"
        raise InputError(f"--out {out} exists ({what}); accepted: a new or empty folder")
    if resume and not (part / "checkpoint.pt").is_file():
        raise InputError(f"--resume: {part / 'checkpoint.pt'} does not exist (no interrupted "
                         f"training of --out {out})")
    if not resume and part.exists():
        raise InputError(f"{part} holds an interrupted training of --out {out}; continue it with "
                         "--resume, or delete it")


def _warnings(hist, r, test_acc: float, classes: int) -> list[str]:
    """What makes this training not a result: divergence, no learning, chance accuracy."""
    out = []
    chance = 1.0 / classes
    limit = CHANCE_FACTOR / classes
    if hist and hist[-1].train_loss >= math.log(classes):
        out.append(f"the final training loss {hist[-1].train_loss:.4f} is not below ln({classes}) "
                   f"= {math.log(classes):.4f}, the loss of a uniform guess: the training "
                   "diverged or did not learn")
    if len(hist) >= 2 and hist[-1].train_loss > 1.5 * min(h.train_loss for h in hist):
        best = min(hist, key=lambda h: h.train_loss)
        out.append(f"the training loss rose from {best.train_loss:.4f} (epoch {best.epoch}) to "
                   f"{hist[-1].train_loss:.4f} (epoch {hist[-1].epoch}): it diverged")
    if r.val_acc <= limit or test_acc <= limit:
        out.append(f"val acc {r.val_acc:.4f} and test acc {test_acc:.4f} are at chance level "
                   f"(1/{classes} = {chance:.4f}; <= {CHANCE_FACTOR}/{classes} = {limit:.4f} "
                   "counts as chance): the network has not learned, this is not a result")
    return out


def main(argv: list[str] | None = None) -> int:
    return run_cli(PROG, _main, argv)


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    import torch

    from ..build import build_model
    from ..space import to_cifar
    from ..train import (GpuBatches, NonFiniteLoss, ProxyTrainer, TrainConfig, pick_device,
                         seed_everything)

    out = Path(args.out)
    part = partial_dir(out)
    try:
        _validate(args)
        spec = valid_spec(resolve_spec(args.spec), args.spec)
        _check_out(out, args.resume)
        device = pick_device(args.device)
        warmup = (args.warmup_epochs if args.warmup_epochs is not None
                  else default_warmup(args.epochs))
        extra = {}
        if "data_seed" in {f.name for f in fields(TrainConfig)}:
            extra["data_seed"] = args.seed
        # Evaluation batch: a batch of 1,000 32x32 images makes every activation of a wide
        # IGCV net hundreds of MB on a CPU, far out of cache (and each one freshly mapped by the
        # allocator): the 10,000 test images took 83 s at batch 1,000 and 25 s at batch 128
        # (igcv3_d_0.25_cifar, one core). On CUDA a large batch is what is fast.
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
                          warmup=warmup / args.epochs, schedule="onecycle",
                          train_fraction=args.train_fraction, seed=args.seed,
                          device=str(device), channels_last=True, amp=True,
                          eval_batch_size=EVAL_BATCH.get(device.type, 1000), **extra)
        splits = load_splits(args.dataset, resolve_data_dir(args.data_dir), val_size=5000, seed=0)
    except IGCVError as e:
        return fail(PROG, str(e))

    res = int(splits.train.x.shape[-1])
    if (spec.input_size, spec.num_classes) != (res, splits.num_classes):
        spec = to_cifar(spec, splits.num_classes, res)
        print(f"{PROG}: training the {args.dataset} variant ({res}x{res}, stem stride 1, stage 2 "
              f"not downsampling, {splits.num_classes} classes): arch id {spec.arch_id}",
              flush=True)
    if args.resume:
        try:
            trained = from_dict(json.loads((part / "spec.json").read_text())["spec"])
        except (OSError, ValueError, KeyError, SpecError) as e:
            return fail(PROG, f"--resume: {part / 'spec.json'} cannot be read: {e}")
        if trained.arch_id != spec.arch_id:
            return fail(PROG, f"--resume: {part} trains arch {trained.arch_id}, not {spec.arch_id}")

    created = not args.resume
    progress = None
    try:
        part.mkdir(parents=True, exist_ok=True)
        write_json(part / "spec.json", {"spec": spec.to_dict(), "arch_id": spec.arch_id,
                                        "recipe": cfg.to_dict(), "dataset": args.dataset})
        seed_everything(args.seed)
        from ..proxy import val_subset
        trainer = ProxyTrainer(build_model(spec), val_subset(splits, args.val_size), cfg)
        if args.resume:
            try:
                trainer.load(part / "checkpoint.pt")
            except ValueError as e:
                return fail(PROG, f"--resume: {e}")
            print(f"{PROG}: resuming at epoch {trainer.epoch + 1}/{trainer.epochs}", flush=True)
        print(f"{PROG}: {trainer.epochs} epoch{'s' if trainer.epochs != 1 else ''} of "
              f"{trainer.steps_per_epoch} steps (batch "
              f"{cfg.batch_size}, {len(trainer.train.y):,} training images, {trainer.val.n:,} "
              f"validation images), warm-up {warmup:g} epochs, peak lr {cfg.lr:g}, on {device}",
              flush=True)
        progress = TrainProgress(trainer.epochs, trainer.steps_per_epoch, trainer.total_steps,
                                 trainer.step, cfg.batch_size)
        t_epoch = [time.perf_counter()]

        def on_epoch(rep) -> None:
            trainer.save(part / "checkpoint.pt")
            write_text(part / "history.csv", "epoch,steps,train_loss,val_acc,seconds\n" + "".join(
                f"{h.epoch},{h.steps},{h.train_loss:.5f},{h.val_acc:.5f},{h.seconds:.2f}\n"
                for h in trainer.history))
            now = time.perf_counter()
            progress.on_epoch(rep, now - t_epoch[0])
            t_epoch[0] = now

        t0 = time.perf_counter()
        if "on_step" in inspect.signature(trainer.fit).parameters:
            r = trainer.fit(on_epoch, on_step=progress.on_step)
        else:  # a trainer without step callbacks: epoch lines only
            r = trainer.fit(on_epoch)
        progress.close()
        print(f"{PROG}: scoring the {len(splits.test):,} test images", flush=True)
        te = time.perf_counter()
        test = GpuBatches(splits.test.x, splits.test.y, splits.mean, splits.std, trainer.device,
                          0, False)
        test_acc = trainer.evaluate(test)
        test_s = time.perf_counter() - te
        warns = _warnings(trainer.history, r, test_acc, splits.num_classes)
        buf = io.BytesIO()
        torch.save({"state_dict": trainer.model.state_dict(), "arch_id": spec.arch_id,
                    "trained": True, "source": f"igcv-train --out {out}"}, buf)
        write_bytes(part / "weights.pt", buf.getvalue())
        result = {"arch_id": spec.arch_id, "dataset": args.dataset, "epochs": r.epochs,
                  "val_acc": r.val_acc, "best_val_acc": r.best_val_acc, "test_acc": test_acc,
                  "chance_acc": 1.0 / splits.num_classes, "warnings": warns,
                  "train_images": len(trainer.train.y), "seconds": r.seconds,
                  "test_seconds": test_s, "wall_seconds_this_run": time.perf_counter() - t0,
                  "recipe": cfg.to_dict()}
        write_json(part / "result.json", result)
        if out.is_dir():  # an empty folder given as --out
            out.rmdir()
        os.replace(part, out)
    except KeyboardInterrupt:
        if progress is not None:
            progress.close()
        if (part / "checkpoint.pt").is_file():
            cmd = shlex.join([PROG, *(argv if argv is not None else sys.argv[1:])])
            if "--resume" not in cmd.split():
                cmd += " --resume"
            print(f"\n{PROG}: interrupted; {out} was not written. The training so far is in "
                  f"{part}; continue it with: {cmd}", file=sys.stderr)
        else:
            if created:
                shutil.rmtree(part, ignore_errors=True)
            print(f"\n{PROG}: interrupted before the first epoch ended; nothing was kept",
                  file=sys.stderr)
        return 130
    except NonFiniteLoss as e:
        if progress is not None:
            progress.close()
        if created:
            shutil.rmtree(part, ignore_errors=True)
        print(f"{PROG}: error: the training diverged: {e}; nothing was written. Try a lower "
              f"--lr (now {cfg.lr:g}) or a longer --warmup-epochs (now {warmup:g})",
              file=sys.stderr)
        return 1
    except BaseException:
        if progress is not None:
            progress.close()
        if created:
            shutil.rmtree(part, ignore_errors=True)
        raise
    for w in warns:
        print(f"{PROG}: WARNING: {w}", file=sys.stderr)
    verdict = " -- NOT a result, see the warnings above" if warns else ""
    print(f"{PROG}: val acc {r.val_acc:.4f}, test acc {test_acc:.4f} ({len(splits.test):,} test "
          f"images, {test_s:.0f} s){verdict}; weights in {out / 'weights.pt'} (igcv-export "
          f"{out / 'spec.json'} --weights {out / 'weights.pt'} --out exports)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
