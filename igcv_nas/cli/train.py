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

import shlex
import sys
import time

from ..evaluate.training_run import prepare_training
from ._common import EXIT_INTERRUPTED, OneLineParser, run_cli

PROG = "igcv-train"
LOG_EVERY_S = 30.0  # plain progress: a step line at most this often (besides the epoch lines)
# the flags that are igcv_nas.evaluate.training_run.prepare_training's keywords (its defaults apply)
KEYWORDS = ("dataset", "data_dir", "epochs", "batch_size", "lr", "weight_decay",
            "label_smoothing", "warmup_epochs", "train_fraction", "val_size", "device", "seed")


def _parser() -> OneLineParser:
    ap = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[1])
    ap.add_argument("spec", help="spec JSON file or zoo network name")
    ap.add_argument("--dataset",
                    help="cifar10 (default), cifar100 or an image folder")
    ap.add_argument("--data-dir", help="where the data set is (default $IGCV_DATA_DIR, else "
                                      "~/.cache/igcv-nas/data)")
    ap.add_argument("--epochs", type=int, help="training epochs (default 200)")
    ap.add_argument("--batch-size", type=int, help="training batch size (default 128)")
    ap.add_argument("--lr", type=float, help="peak learning rate (default 0.1)")
    ap.add_argument("--weight-decay", type=float,
                    help="weight decay, not on BN and biases (default 5e-4)")
    ap.add_argument("--label-smoothing", type=float, help="label smoothing (default 0.1)")
    ap.add_argument("--warmup-epochs", type=float,
                    help="epochs of linear lr warm-up, 0 <= value < --epochs (default "
                         "min(5, epochs / 10): 5 for 50 epochs and more, 0.1 for 1 epoch)")
    ap.add_argument("--train-fraction", type=float,
                    help="use a fraction (0, 1] of the training split (quick checks; default 1: "
                         "all 45,000 images)")
    ap.add_argument("--val-size", type=int,
                    help="held-out validation images scored each epoch (default all 5,000)")
    ap.add_argument("--device", help="auto (default: CUDA when available), cpu, cuda")
    ap.add_argument("--seed", type=int,
                    help="initialisation and data-order seed (default 0)")
    ap.add_argument("--out", required=True, help="output directory (must not exist or be empty)")
    ap.add_argument("--resume", action="store_true", help="continue the interrupted training "
                                                          "in OUT.partial")
    return ap


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

def main(argv: list[str] | None = None) -> int:
    return run_cli(PROG, _main, argv)


def _say(message: str) -> None:
    print(f"{PROG}: {message}", flush=True)


def _main(argv: list[str] | None) -> int:
    """Parse -> :func:`igcv_nas.evaluate.training_run.prepare_training` -> run -> print."""
    args = _parser().parse_args(argv)
    from ..evaluate.train import NonFiniteLoss
    given = {k: getattr(args, k) for k in KEYWORDS if getattr(args, k) is not None}
    prep = prepare_training(args.spec, args.out, resume=args.resume, log=_say, **given)
    try:
        outcome = prep.run(lambda t: TrainProgress(t.epochs, t.steps_per_epoch, t.total_steps,
                                                   t.step, t.cfg.batch_size))
    except KeyboardInterrupt:
        out, part = prep.out, prep.partial
        if prep.resumable:
            cmd = shlex.join([PROG, *(argv if argv is not None else sys.argv[1:])])
            if "--resume" not in cmd.split():
                cmd += " --resume"
            print(f"\n{PROG}: interrupted; {out} was not written. The training so far is in "
                  f"{part}; continue it with: {cmd}", file=sys.stderr)
        else:
            print(f"\n{PROG}: interrupted before the first epoch ended; nothing was kept",
                  file=sys.stderr)
        return EXIT_INTERRUPTED
    except NonFiniteLoss as e:
        print(f"{PROG}: error: the training diverged: {e}; nothing was written. Try a lower "
              f"--lr (now {prep.config.lr:g}) or a longer --warmup-epochs (now "
              f"{prep.warmup_epochs:g})", file=sys.stderr)
        return 1
    r, out = outcome.result, outcome.out
    for w in outcome.warnings:
        print(f"{PROG}: WARNING: {w}", file=sys.stderr)
    verdict = " -- NOT a result, see the warnings above" if outcome.warnings else ""
    print(f"{PROG}: val acc {r['val_acc']:.4f}, test acc {r['test_acc']:.4f} "
          f"({outcome.test_images:,} test images, {r['test_seconds']:.0f} s){verdict}; weights in "
          f"{out / 'weights.pt'} (igcv-export {out / 'spec.json'} --weights {out / 'weights.pt'} "
          f"--out exports)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
