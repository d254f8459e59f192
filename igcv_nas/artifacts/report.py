"""Reports of a search run: the trials table for notebooks, plots, and a Markdown/HTML summary.

Pure functions over a run directory (:mod:`igcv_nas.search.runstore`); no Ray, no training. The
study journal stays the source of truth: everything here is read from ``run.json`` and
``trials.csv``, which the search rewrites from the journal after every trial.

* the trials table with its dtypes: :func:`igcv_nas.search.runstore.load_trials` (the one loader);
  :func:`load_meta` -- ``run.json``.
* :func:`render` -- every report file as bytes, in memory (nothing written):
  ``pareto_macs.png`` (score vs MACs, Pareto front, best trial, MACs budget),
  ``pareto_latency.png`` (score vs latency; only when the run has latencies), ``progress.png``
  (best score so far vs trial number), ``trials.csv``, ``report.md`` and ``report.html``.
* :func:`write_report` -- ``igcv-report`` as a call: its checks, render, then write each file
  atomically into the output folder.
"""
from __future__ import annotations

import html
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import IGCVError, InputError
from ..arch.cost import human
from ..fileio import write_bytes, write_text
from ..search.runstore import (COMPLETE, DUPLICATE, FAILED, JOURNAL, LOST, OVER_BUDGET, PRUNED,
                               RUNNING, STUDY_NAME, RunDir, RunError, load_trials, pareto_front)

if TYPE_CHECKING:
    import pandas as pd

# dtypes of the trials table's columns (zc_* scores are floats too)
BELOW_BAND = "below-band"  # runstore.BELOW_BAND: a sample under the MACs band floor, not trained
STATUS_ORDER = (COMPLETE, PRUNED, FAILED, OVER_BUDGET, BELOW_BAND, DUPLICATE, RUNNING, LOST)

# every PNG is FIGSIZE x DPI pixels: 960 x 600
FIGSIZE, DPI = (8.0, 5.0), 120
PARETO_MACS, PARETO_LATENCY, PROGRESS = "pareto_macs.png", "pareto_latency.png", "progress.png"
REPORT_MD, REPORT_HTML, TRIALS_CSV = "report.md", "report.html", "trials.csv"
DEFAULT_TOP = 10  # architectures in the top table
LATENCY = "latency"  # column added for plots: measured latency where present, else predicted
# cost axis: label (with its unit), divisor
_AXES = {"macs": ("MACs (M, millions of multiply-accumulates at batch 1)", 1e6),
         LATENCY: ("latency (ms; measured where available, else predicted)", 1.0)}
# score axis: what each score's number is (igcv_nas.evaluate.zero_cost documents the zero-cost ones)
SCORE_UNITS = {"val_acc": "fraction", "best_val_acc": "fraction",
               "val_loss": "cross-entropy, nats", "tse": "sum of training losses, nats",
               "zc_synflow": "log10", "zc_naswot": "ln |det K|",
               "zc_grad_norm": "sum of per-layer gradient L2 norms", "zc_zico": "sum of ln"}


def score_label(score: str) -> str:
    """The axis label of a score with its unit: ``val acc (fraction)``, ``zc_synflow (log10)``."""
    name = score.replace("_", " ") if not score.startswith("zc_") else score
    return f"{name} ({SCORE_UNITS.get(score, 'score, no unit')})"


# ---------------------------------------------------------------------------------------------
# reading a run

def load_meta(run_dir: str | os.PathLike) -> dict:
    """``run.json`` of a run directory (RunError when ``run_dir`` is not one).

    Args:
        run_dir: the run directory of ``igcv-search``.

    Returns:
        The contents of its ``run.json`` (a dict).

    Raises:
        RunError: ``run_dir`` does not exist, has no ``run.json``, or its ``run.json`` cannot be
            read or is not of the run format (:meth:`~igcv_nas.search.runstore.RunDir.open`)."""
    return RunDir.open(run_dir).meta


_NUMBER = (int, float)
# the run.json fields a report reads, and the types it accepts for each (None: absent or null)
META_SHAPE = {"elapsed_s": _NUMBER, "attempts": list, "space": dict, "settings": dict,
              "engine": dict}
SETTINGS_SHAPE = {"macs": _NUMBER, "params": _NUMBER, "latency_ms": _NUMBER, "budget": dict,
                  "trials": _NUMBER, "seed": _NUMBER}


def check_meta(meta: dict, where: str) -> dict:
    """``meta`` when every field the report reads has an accepted type; RunError (one line
    naming the field) otherwise -- a hand-edited or damaged ``run.json`` is refused, not
    half-rendered."""
    def bad(name: str, v, kinds) -> RunError:
        names = "/".join(sorted({k.__name__ for k in (kinds if isinstance(kinds, tuple)
                                                         else (kinds,))}))
        return RunError(f"{where}: {name} is {type(v).__name__} {str(v)[:40]!r}; accepted: "
                        f"{names} or null")
    for key, kinds in META_SHAPE.items():
        v = meta.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, kinds)):
            raise bad(key, v, kinds)
    for key, kinds in SETTINGS_SHAPE.items():
        v = (meta.get("settings") or {}).get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, kinds)):
            raise bad(f"settings.{key}", v, kinds)
    ladder = (meta.get("engine") or {}).get("ladder")
    if ladder is not None and not (isinstance(ladder, list)
                                   and all(isinstance(r, dict) for r in ladder)):
        raise bad("engine.ladder", ladder, list)
    return meta


def score_column(meta: dict) -> str:
    """The column the search maximised (:attr:`igcv_nas.search.settings.Settings.score`):
    ``val_acc``, or ``zc_<metric>`` for a zero-cost proxy."""
    from ..search.settings import SearchError, Settings
    settings = meta.get("settings")
    if not isinstance(settings, dict):
        raise RunError("run.json has no search settings; it is not an igcv-search run")
    try:
        return Settings.from_dict(settings).score
    except (SearchError, TypeError) as e:
        raise RunError(f"run.json: settings cannot be read: {e}") from None


def with_latency(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a ``latency`` column: ``measured_latency_ms`` where present, else
    ``latency_ms`` (predicted)."""
    return df.assign(**{LATENCY: df["measured_latency_ms"].fillna(df["latency_ms"])})


def scored(df: pd.DataFrame, score: str, status: str = COMPLETE) -> pd.DataFrame:
    """Trials of ``status`` that have a score, best first (ties: fewer MACs first)."""
    if score not in df.columns:
        return df.iloc[0:0]
    d = df[(df["status"] == status).fillna(False) & df[score].notna()]
    return d.sort_values([score, "macs", "number"], ascending=[False, True, True], kind="stable")


def front(df: pd.DataFrame, score: str, cost: str = "macs") -> pd.DataFrame:
    """The Pareto front of the complete trials (higher ``score``, lower ``cost``), cheapest
    first (:func:`igcv_nas.search.runstore.pareto_front`)."""
    d = scored(df, score)
    d = d[d[cost].notna()]
    numbers = [r["number"] for r in pareto_front(d.to_dict("records"), score, cost)]
    return d.set_index("number", drop=False).loc[numbers].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# plots (matplotlib's Agg canvas; no pyplot, so no global state)

def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _empty_note(ax, text: str) -> None:
    ax.text(0.5, 0.96, text, transform=ax.transAxes, ha="center", va="top", color="0.3",
            bbox={"facecolor": "white", "edgecolor": "0.7", "boxstyle": "round"})


def _legend(fig, ax) -> None:
    """The legend below the axes (never over the points)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(handles)),
                   fontsize=9, frameon=False)


def plot_pareto(df: pd.DataFrame, score: str, cost: str = "macs", budget: float | None = None,
                title: str = "") -> bytes:
    """PNG: ``score`` vs ``cost`` (``macs``, in millions, or ``latency`` in ms) of the complete
    trials, pruned trials (score when stopped) in another marker, the Pareto front as a step
    line, the best trial annotated and the ``budget`` (in ``cost`` units) as a vertical line."""
    return _png(pareto_figure(df, score, cost, budget, title))


def pareto_figure(df: pd.DataFrame, score: str, cost: str = "macs", budget: float | None = None,
                  title: str = ""):
    """The matplotlib Figure of :func:`plot_pareto`."""
    label, div = _AXES[cost]
    fig, ax = _figure()
    done = scored(df, score)
    done = done[done[cost].notna()]
    pruned = scored(df, score, PRUNED)
    pruned = pruned[pruned[cost].notna()]
    if len(pruned):
        ax.scatter(pruned[cost].astype(float) / div, pruned[score], marker="x", color="0.55",
                   label=f"pruned ({len(pruned)}; score when stopped)")
    if len(done):
        ax.scatter(done[cost].astype(float) / div, done[score], marker="o", color="tab:blue",
                   alpha=0.8, label=f"complete ({len(done)})")
        pf = front(df, score, cost)
        # the best score reachable at each cost: the step goes on to the costliest trial
        xs = list(pf[cost].astype(float) / div) + [float(done[cost].astype(float).max()) / div]
        ys = list(pf[score]) + [float(pf[score].iloc[-1])]
        ax.step(xs, ys, where="post", color="tab:red", linewidth=1.5,
                label=f"Pareto front ({len(pf)})")
        ax.scatter(pf[cost].astype(float) / div, pf[score], s=110, facecolors="none",
                   edgecolors="tab:red", linewidths=1.5)
        best = done.iloc[0]
        ax.annotate(f"best: trial {best['number']}\n{score} {best[score]:.4f}",
                    xy=(float(best[cost]) / div, best[score]), xytext=(12, -28),
                    textcoords="offset points", fontsize=9,
                    arrowprops={"arrowstyle": "->", "color": "0.2"})
    else:
        _empty_note(ax, "no complete trials yet")
    if budget is not None:
        text = f"{human(budget)} MACs" if cost == "macs" else f"{budget:g} ms"
        ax.axvline(budget / div, color="0.2", linestyle="--", linewidth=1,
                   label=f"budget {text}")
        if not len(done) and not len(pruned):
            ax.set_xlim(0, 1.1 * budget / div)
    ax.set_xlabel(label)
    ax.set_ylabel(score_label(score))
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    _legend(fig, ax)
    return fig


def plot_progress(df: pd.DataFrame, score: str, title: str = "") -> bytes:
    """PNG: the best score so far (complete trials) vs the study's trial number -- the search's
    convergence -- over each trial's own score (pruned ones: the score when stopped)."""
    return _png(progress_figure(df, score, title))


def progress_figure(df: pd.DataFrame, score: str, title: str = ""):
    """The matplotlib Figure of :func:`plot_progress`."""
    from matplotlib.ticker import MaxNLocator
    fig, ax = _figure()
    done = scored(df, score).sort_values("number")
    pruned = scored(df, score, PRUNED)
    if len(pruned):
        ax.scatter(pruned["number"].astype(float), pruned[score], marker="x", color="0.55",
                   label="pruned trial (score when stopped)")
    if len(done):
        x = done["number"].astype(float)
        ax.scatter(x, done[score], color="tab:blue", alpha=0.6, label="complete trial")
        last = float(df["number"].max())
        ax.step(list(x) + [last], list(done[score].cummax()) + [done[score].max()],
                where="post", color="tab:red", linewidth=1.5, label="best so far")
    else:
        _empty_note(ax, "no complete trials yet")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial number (count, study order; over-budget and duplicate samples included)")
    ax.set_ylabel(score_label(score))
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    _legend(fig, ax)
    return fig


# ---------------------------------------------------------------------------------------------
# the document: built once as parts, written as Markdown and as HTML

@dataclass(frozen=True)
class Para:
    text: str


@dataclass(frozen=True)
class Table:
    df: pd.DataFrame
    right: tuple[str, ...] = ()  # right-aligned columns (numbers)


@dataclass(frozen=True)
class Image:
    src: str
    alt: str


@dataclass(frozen=True)
class Code:
    text: str


@dataclass(frozen=True)
class Heading:
    text: str


Part = Heading | Para | Table | Image | Code


def _duration(s: float | None) -> str:
    if s is None:
        return "-"
    t = int(round(s))
    return f"{t // 3600:d}:{t % 3600 // 60:02d}:{t % 60:02d} ({s:.1f} s)"


def _missing(v) -> bool:
    import pandas as pd
    return v is None or bool(pd.isna(v))


def _h(v) -> str:
    """``human(v)``, or ``-`` for a missing cell."""
    return "-" if _missing(v) else human(v)


def _count(v) -> str:
    return "-" if _missing(v) else f"{human(v)} ({int(v):,})"


def trials_table(d: pd.DataFrame, score: str) -> pd.DataFrame:
    """The report's view of trials: trial, score, MACs, params, latency, arch id (as text)."""
    import pandas as pd
    lat = d[LATENCY] if LATENCY in d.columns else with_latency(d)[LATENCY]
    return pd.DataFrame({
        "trial": d["number"].astype(int).to_numpy(),
        score: [f"{v:.4f}" for v in d[score]],
        "MACs": [_h(v) for v in d["macs"]],
        "params": [_h(v) for v in d["params"]],
        "latency ms": ["-" if pd.isna(v) else f"{v:.2f}" for v in lat],
        "arch id": d["arch_id"].astype(str).to_numpy(),
    })


def _settings_table(meta: dict, score: str) -> pd.DataFrame:
    import pandas as pd
    s, sp = meta.get("settings") or {}, meta.get("space") or {}
    b = s.get("budget") or {}
    tr = b.get("train") or {}
    length = (f"{tr['steps']} steps" if tr.get("steps") else f"{tr.get('epochs', '-')} epochs")
    proxy = s.get("proxy", "training")
    if proxy == "zero-cost":
        proxy_text = f"zero-cost ({s.get('zero_cost_metric')}); score {score}"
    else:
        # what was asked for (a setting); what ran is the engine record's row
        if "scheduler" in s:
            asked = f"; scheduler requested: {s['scheduler']}"
        elif "asha" in s:  # runs of older versions
            asked = "; ASHA requested" if s["asha"] else "; ASHA not requested (--no-asha)"
        else:
            asked = ""
        proxy_text = (f"{proxy} on {s.get('dataset', '-')}: {length}, train fraction "
                      f"{tr.get('train_fraction', '-')}, batch {tr.get('batch_size', '-')}, "
                      f"{b.get('val_size', '-')} validation images; score {score}{asked}")
    lat = s.get("latency_ms")
    rows = [
        ("space", f"{sp.get('name', s.get('space'))} (sha256 {str(sp.get('sha256', ''))[:12]})"),
        ("MACs budget", _count(s.get("macs"))),
        ("params budget", _count(s.get("params"))),
        ("latency budget", "-" if lat is None else f"{lat:g} ms on {s.get('latency_device')}"),
        ("target", str(s.get("target", "-"))),
        ("objective", str(s.get("objective", "-"))),
        ("proxy", proxy_text),
        ("what ran", engine_text(meta)),
        ("sampler", str(s.get("sampler", "-"))),
        ("seed", str(s.get("seed", "-"))),
        ("trials", f"{s.get('trials', '-')} (time budget "
                   f"{_duration(s.get('time_budget_s')) if s.get('time_budget_s') else 'none'})"),
    ]
    return pd.DataFrame(rows, columns=["setting", "value"])


def _rung(r: dict) -> str:
    return (f"{r.get('name', '?')} (keep {r.get('keep', '?')}, x{r.get('factor', '?')} budget, "
            f"{len(r.get('seeds') or []) or 1} seed(s))")


def engine_text(meta: dict) -> str:
    """What the search engine actually ran, from ``run.json``'s ``engine`` record; for a run
    that has none (an older version) it says so instead of guessing from the settings."""
    e = meta.get("engine")
    if not isinstance(e, dict):
        return ("not recorded in run.json (written by an older version): whether ASHA ran, "
                "and with how many images, is unknown")
    asha = e.get("asha")
    parts = [("ASHA ran" if asha else "ASHA did not run") if asha is not None
             else "ASHA not recorded"]
    if e.get("proxy") == "zero-cost" or (e.get("proxy_images") == 0 and e.get("epochs") == 0):
        parts.append("no training (zero-cost proxy)")
    else:
        def num(k):
            v = e.get(k)
            return f"{v:,}" if isinstance(v, int) else "?"
        parts.append(f"{num('proxy_images')} proxy training images, {num('val_images')} "
                     f"validation images, {num('epochs')} epochs = {num('steps')} steps per trial")
    ladder = e.get("ladder")
    if ladder:
        parts.append(f"ladder of {len(ladder)} rungs: " + ", ".join(_rung(r) for r in ladder))
    elif "ladder" in e:
        parts.append("no ladder")
    return "; ".join(parts)


def _status_table(df: pd.DataFrame) -> pd.DataFrame:
    counts = df["status"].value_counts()
    order = list(STATUS_ORDER) + sorted(set(counts.index) - set(STATUS_ORDER))
    counts = counts.reindex(order, fill_value=0).astype(int)
    return counts.rename_axis("status").reset_index(name="trials")


def _best_json(run: RunDir) -> dict | None:
    import json
    f = run.path / "best.json"
    try:
        b = json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None
    except (OSError, ValueError):
        return None
    return b if isinstance(b, dict) else None


def document(run: RunDir, df: pd.DataFrame, meta: dict, score: str, top: int,
             images: list[tuple[str, str]]) -> list[Part]:
    """The report as parts (headings, paragraphs, tables, images, code)."""
    import pandas as pd
    name = run.path.name
    journal = run.path / JOURNAL
    parts: list[Part] = [Heading(f"igcv-search report: {name}")]
    atts = meta.get("attempts") or []
    parts.append(Para(f"Run directory {run.path}; status {meta.get('status', '-')}; created "
                      f"{meta.get('created', '-')}; {len(atts)} attempt(s); elapsed "
                      f"{_duration(meta.get('elapsed_s'))}."))
    parts += [Heading("Settings"), Table(_settings_table(meta, score))]
    parts += [Heading("Trials"), Table(_status_table(df), ("trials",)),
              Para("Complete, pruned and failed trials were evaluated; over-budget, "
                   "below-band and duplicate samples were never trained.")]
    done = scored(df, score)
    parts.append(Heading("Best"))
    best = _best_json(run)
    if best and best.get("confirmed"):
        w = best["confirmation"]["winner"]
        spread = f" +/- {w['std']:.4f} (std)" if w.get("std") is not None else ""
        runs = ", ".join(f"{v:.4f}" for v in w["runs"])
        parts.append(Para(f"Confirmed best: trial {best['number']}, {score} {w['mean']:.4f}"
                          f"{spread} over {len(w['runs'])} fresh-seed re-trainings ({runs}; "
                          f"seed offsets {w['seeds']}), {_h(best['macs'])} MACs, "
                          f"{_h(best['params'])} params, arch id {best['arch_id']}; its "
                          f"first-rung score was {best.get(score, float('nan')):.4f}."))
        cands = best["confirmation"]["candidates"]
        parts.append(Table(pd.DataFrame([{"trial": c["number"], f"mean {score}": f"{c['mean']:.4f}",
                                          "std": "-" if c["std"] is None else f"{c['std']:.4f}",
                                          "runs": ", ".join(f"{v:.4f}" for v in c["runs"])}
                                         for c in cands]), ("trial",)))
    elif len(done):
        b = done.iloc[0]
        why = best.get("note") if best else None
        parts.append(Para(f"Best (not confirmed{': ' + why if why else ''}): trial {b['number']}, "
                          f"{score} {b[score]:.4f}, {_h(b['macs'])} MACs, "
                          f"{_h(b['params'])} params, arch id {b['arch_id']}."))
    else:
        parts.append(Para("No complete trials yet."))
    parts.append(Heading(f"Top {top} by {score}"))
    right = ("trial", score, "MACs", "params", "latency ms")
    parts.append(Table(trials_table(done.head(top), score), right) if len(done)
                 else Para("No complete trials yet."))
    parts.append(Heading(f"Pareto front ({score} vs MACs)"))
    pf = front(df, score)
    parts.append(Table(trials_table(pf, score), right) if len(pf)
                 else Para("No complete trials yet."))
    parts.append(Heading("Plots"))
    parts += [Image(src, alt) for src, alt in images]
    parts += [Heading("Open the study"),
              Para("The Optuna study (the source of truth of this run) in optuna-dashboard, "
                   "which accepts a journal file path:"),
              Code(f"optuna-dashboard {journal}"),
              Para("or in Python:"),
              Code("import optuna\n"
                   "from optuna.storages import JournalStorage\n"
                   "from optuna.storages.journal import JournalFileBackend\n\n"
                   f"study = optuna.load_study(study_name={STUDY_NAME!r}, storage=JournalStorage(\n"
                   f"    JournalFileBackend({str(journal)!r})))\n\n"
                   "from igcv_nas.search.runstore import load_trials  # the trials table, typed\n"
                   f"df = load_trials({str(run.path)!r})")]
    return parts


def to_markdown(parts: list[Part]) -> str:
    out = []
    for i, p in enumerate(parts):
        if isinstance(p, Heading):
            out.append(f"{'#' if i == 0 else '##'} {p.text}")
        elif isinstance(p, Para):
            out.append(p.text)
        elif isinstance(p, Table):
            # cells are formatted already: tabulate keeps them as they are
            out.append(p.df.to_markdown(index=False, disable_numparse=True, colalign=[
                "right" if c in p.right else "left" for c in p.df.columns]))
        elif isinstance(p, Image):
            out.append(f"![{p.alt}]({p.src})")
        elif isinstance(p, Code):
            out.append(f"```\n{p.text}\n```")
    return "\n\n".join(out) + "\n"


_CSS = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;"
        "padding:.2em .6em;text-align:left}pre{background:#f4f4f4;padding:.6em;overflow-x:auto}"
        "img{max-width:100%}")


def to_html(parts: list[Part]) -> str:
    title = next((p.text for p in parts if isinstance(p, Heading)), "report")
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>"]
    for i, p in enumerate(parts):
        if isinstance(p, Heading):
            tag = "h1" if i == 0 else "h2"
            out.append(f"<{tag}>{html.escape(p.text)}</{tag}>")
        elif isinstance(p, Para):
            out.append(f"<p>{html.escape(p.text)}</p>")
        elif isinstance(p, Table):
            out.append(p.df.to_html(index=False, border=0))
        elif isinstance(p, Image):
            out.append(f'<p><img src="{html.escape(p.src)}" alt="{html.escape(p.alt)}"></p>')
        elif isinstance(p, Code):
            out.append(f"<pre><code>{html.escape(p.text)}</code></pre>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# the whole report

def render(run_dir: str | os.PathLike, top: int = DEFAULT_TOP) -> dict[str, str | bytes]:
    """Every report file of ``run_dir`` (name -> text or PNG bytes), rendered in memory;
    RunError when ``run_dir`` is not a run directory, ValueError when ``top`` < 1 or a table is
    unreadable.

    Args:
        run_dir: the run directory of ``igcv-search``.
        top: architectures in the top table (at least 1).

    Returns:
        File name -> contents: ``pareto_macs.png``, ``pareto_latency.png`` (only when an
        evaluated trial has a latency) and ``progress.png`` as PNG bytes; ``trials.csv`` (the
        run's table), ``report.md`` and ``report.html`` as text.

    Raises:
        InputError: ``top`` < 1.
        RunError: ``run_dir`` is not a run directory, its ``run.json`` has a field of the wrong
            type or no search settings, or its ``trials.csv`` is missing while trials were
            recorded, or cannot be read as a trials table."""
    if top < 1:
        raise InputError(f"--top {top}; accepted: an integer >= 1")
    run = RunDir.open(run_dir)
    meta = check_meta(run.meta, str(run.path / "run.json"))
    score = score_column(meta)
    if not (run.path / TRIALS_CSV).is_file() and (
            run.journal.is_file() or any((run.path / "trials").glob("*/spec.json"))):
        # a run right after its creation has no table yet (and reports none); one whose study
        # or trial folders exist lost its table: "0 trials" would not be true
        raise RunError(f"{run.path / TRIALS_CSV} does not exist, but the run has recorded "
                       f"trials (a resume of the search rewrites it from the study); nothing "
                       f"to report")
    raw = load_trials(run.path)
    # one point per architecture (ladder rows aside); rows without a trial number are not trials
    df = with_latency(raw[(raw.rung == 0).fillna(False) & raw.number.notna()].copy())
    if score not in df.columns:
        df[score] = float("nan")
    settings = meta.get("settings") or {}
    name = run.path.name
    pareto_png = plot_pareto(df, score, "macs", settings.get("macs"), f"{name}: {score} vs MACs")
    files: dict[str, str | bytes] = {PARETO_MACS: pareto_png}
    images = [(PARETO_MACS, f"{score} vs MACs")]
    evaluated = df[df["status"].isin([COMPLETE, PRUNED])]
    if evaluated[LATENCY].notna().any():
        files[PARETO_LATENCY] = plot_pareto(df, score, LATENCY, settings.get("latency_ms"),
                                            f"{name}: {score} vs latency")
        images.append((PARETO_LATENCY, f"{score} vs latency"))
    files[PROGRESS] = plot_progress(df, score, f"{name}: best {score} so far")
    images.append((PROGRESS, f"best {score} so far vs trial number"))
    src = run.path / TRIALS_CSV
    files[TRIALS_CSV] = (src.read_text(encoding="utf-8") if src.is_file()
                         else raw.to_csv(index=False))  # the run's table, byte for byte
    parts = document(run, df, meta, score, top, images)
    files[REPORT_MD] = to_markdown(parts)
    files[REPORT_HTML] = to_html(parts)
    return files


def write_files(files: dict[str, str | bytes], folder: str | os.PathLike) -> list[Path]:
    """Write rendered files (:func:`render`) into ``folder``, each atomically."""
    paths = []
    for fname, data in files.items():
        p = Path(folder) / fname
        if isinstance(data, str):
            write_text(p, data)
        else:
            write_bytes(p, data)
        paths.append(p)
    return paths


def write_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                 top: int = DEFAULT_TOP) -> list[Path]:
    """Render the report of ``run_dir`` and write it into ``out`` (default ``RUN_DIR/report``);
    returns the paths written. Everything ``igcv-report`` refuses is refused here, before any
    write and with the same one-line message: ``top`` < 1 or an ``out`` that exists and is not a
    folder (InputError), not a run directory or an unreadable run (RunError, InputError); a
    file that cannot be written is a :class:`ReportWriteError`."""
    if top < 1:
        raise InputError(f"--top {top}; accepted: an integer >= 1")
    folder = report_dir(run_dir, out)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--out {folder} exists and is not a folder")
    files = render(run_dir, top)  # every check, all rendering, before any write
    try:
        return write_files(files, folder)
    except OSError as e:
        raise ReportWriteError(f"cannot write the report into {folder}: {e}") from e


def report_dir(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Where the report of ``run_dir`` goes: ``out``, else ``RUN_DIR/report``."""
    return Path(out) if out is not None else Path(run_dir) / "report"


class ReportWriteError(IGCVError, OSError):
    """A report file that could not be written (one line: the folder and the OS's reason)."""
