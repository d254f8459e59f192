"""Progress of a search on the terminal: a live panel (rich) or, in quiet mode and when the
output is not a terminal, one log line per change of the counts. Results tables at the end."""
from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..arch.cost import human


def _dur(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _best(sm: Any) -> str:
    b = sm.best
    if not b:
        return "-"
    if b.get("confirmed"):
        std = f" +/- {b['std']:.4f}" if b.get("std") is not None else ""
        return (f"{b[sm.score]:.4f}{std} confirmed over {b['seeds']} seeds (trial {b['number']}, "
                f"{human(b['macs'])} MACs)")
    return f"{b[sm.score]:.4f} (trial {b['number']}, {human(b['macs'])} MACs)"


def _ladder(sm: Any) -> str:
    if not sm.ladder_planned:
        return ""
    return f"ladder {sm.ladder_done}/{sm.ladder_planned} ({sm.phase})"


class Progress:
    """``update(summary)`` after every event; ``close()`` at the end."""

    def __init__(self, title: str, quiet: bool = False, stream=None):
        self.title = title
        self.stream = stream or sys.stdout
        self.console = Console(file=self.stream, highlight=False)
        self.live_mode = not quiet and self.console.is_terminal
        self.sm = None
        self._last_line = None
        self._live: Live | None = None
        if self.live_mode:
            self._live = Live(self, console=self.console, refresh_per_second=2, transient=False)
            self._live.start()

    def __rich__(self) -> Table:
        t = Table.grid(padding=(0, 2))
        t.add_column(style="bold")
        t.add_column()
        sm = self.sm
        t.add_row("search", self.title)
        if sm is None:
            t.add_row("status", "starting")
            return t
        bar_w = 30
        filled = int(bar_w * min(1.0, sm.done / max(1, sm.target)))
        t.add_row("trials", f"[{'#' * filled}{'.' * (bar_w - filled)}] {sm.done}/{sm.target}  "
                            f"complete {sm.complete}  pruned {sm.pruned}  failed {sm.failed}  "
                            f"running {sm.running}")
        t.add_row("skipped", f"over budget {sm.over_budget}  below band {sm.below_band}  "
                             f"duplicates {sm.duplicates} (never trained)")
        if sm.ladder_planned:
            t.add_row("ladder", f"{sm.ladder_done}/{sm.ladder_planned} trainings ({sm.phase}: "
                                f"promotions, then fresh-seed confirmations)")
        t.add_row("best", _best(sm))
        t.add_row("elapsed", f"{_dur(sm.elapsed_s)}   ETA {_dur(sm.eta_s)}   attempt {sm.attempt}")
        return t

    def update(self, sm: Any) -> None:
        """Live mode: redraw. Log mode: one line when a count or the best changes (a trial
        starting is not a change), under 120 columns."""
        self.sm = sm
        if self.live_mode:
            return
        skipped = sm.over_budget + sm.below_band + sm.duplicates
        line = (f"trials {sm.done}/{sm.target} ({sm.complete} ok, {sm.pruned} pruned, "
                f"{sm.failed} failed, {skipped} skipped) {_ladder(sm)}".rstrip()
                + f" best {_best(sm)}")
        if line != self._last_line:
            self._last_line = line
            print(f"[{time.strftime('%H:%M:%S')}] {line} ETA {_dur(sm.eta_s)}"[:119],
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def results_tables(rows: list[dict], pareto: list[dict], score: str, top: int = 10,
                   stream=None) -> None:
    """The top architectures and the Pareto front (score vs MACs)."""
    con = Console(file=stream or sys.stdout, highlight=False, width=120)
    sign = -1 if score in ("val_loss", "tse") else 1
    first = [r for r in rows if not r.get("rung")]
    done = sorted((r for r in first if r["status"] == "complete"), key=lambda r: -sign * r[score])

    def table(title: str, rs: list[dict]) -> Table:
        t = Table(title=title)
        for c in ("trial", score, "MACs", "params", "latency ms", "arch id"):
            t.add_column(c, justify="left" if c == "arch id" else "right")
        for r in rs:
            lat = r.get("measured_latency_ms") or r.get("latency_ms")
            t.add_row(str(r["number"]), f"{r[score]:.4f}", human(r["macs"]), human(r["params"]),
                      f"{lat:.2f}" if lat else "-", str(r["arch_id"]))
        return t

    con.print(table(f"top {min(top, len(done))} architectures (first rung)", done[:top]))
    con.print(table(f"Pareto front ({score} vs MACs)", pareto))
    ladder = [r for r in rows if r.get("rung")]
    if ladder:
        t = Table(title="ladder (rung 1: promoted, 3x the images; "
                        "rung 2: fresh-seed confirmations)")
        for c in ("trial", "rung", "seed", "status", score, "MACs"):
            t.add_column(c, justify="right")
        for r in ladder:
            v = r.get(score)
            t.add_row(str(r["number"]), str(r["rung"]), str(r["seed"]), r["status"],
                      f"{v:.4f}" if v is not None else "-", human(r["macs"]))
        con.print(t)
