"""Progress of a search on the terminal: a live panel (rich) or, in quiet mode and when the
output is not a terminal, one log line per change of the counts. Results tables at the end."""
from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from .cost import human


def _dur(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _best(sm: Any) -> str:
    b = sm.best
    if not b:
        return "-"
    return f"{b[sm.score]:.4f} (trial {b['number']}, {human(b['macs'])} MACs)"


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
        t.add_row("skipped", f"over budget {sm.over_budget}  duplicates {sm.duplicates} "
                             f"(never trained)")
        t.add_row("best", _best(sm))
        t.add_row("elapsed", f"{_dur(sm.elapsed_s)}   ETA {_dur(sm.eta_s)}   attempt {sm.attempt}")
        return t

    def update(self, sm: Any) -> None:
        self.sm = sm
        if self.live_mode:
            return
        line = (f"trials {sm.done}/{sm.target} (complete {sm.complete}, pruned {sm.pruned}, "
                f"failed {sm.failed}, running {sm.running}; over budget {sm.over_budget}, "
                f"duplicates {sm.duplicates}) best {_best(sm)}")
        if line != self._last_line:
            self._last_line = line
            print(f"[{time.strftime('%H:%M:%S')}] {line}  elapsed {_dur(sm.elapsed_s)}"
                  f" ETA {_dur(sm.eta_s)}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def results_tables(rows: list[dict], pareto: list[dict], score: str, top: int = 10,
                   stream=None) -> None:
    """The top architectures and the Pareto front (score vs MACs)."""
    con = Console(file=stream or sys.stdout, highlight=False, width=120)
    done = sorted((r for r in rows if r["status"] == "complete"), key=lambda r: -r[score])

    def table(title: str, rs: list[dict]) -> Table:
        t = Table(title=title)
        for c in ("trial", score, "MACs", "params", "latency ms", "arch id"):
            t.add_column(c, justify="left" if c == "arch id" else "right")
        for r in rs:
            lat = r.get("measured_latency_ms") or r.get("latency_ms")
            t.add_row(str(r["number"]), f"{r[score]:.4f}", human(r["macs"]), human(r["params"]),
                      f"{lat:.2f}" if lat else "-", str(r["arch_id"]))
        return t

    con.print(table(f"top {min(top, len(done))} architectures", done[:top]))
    con.print(table(f"Pareto front ({score} vs MACs)", pareto))
