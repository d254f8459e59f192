"""The search's progress display in log mode and its results tables (no Ray, no training)."""
from __future__ import annotations

import io

from igcv_nas.search.progress import Progress, results_tables
from igcv_nas.search.engine import Summary


def _sm(**kw) -> Summary:
    base = dict(target=20, complete=3, pruned=1, failed=0, running=2, over_budget=7,
                below_band=2, duplicates=1, elapsed_s=125.0, eta_s=600.0, score="val_acc",
                best={"number": 4, "val_acc": 0.2512, "macs": 281_000_000})
    base.update(kw)
    return Summary(**base)


def test_log_mode_one_line_per_change_under_120_columns():
    out = io.StringIO()
    p = Progress("igcv3 300M -> run", quiet=True, stream=out)
    p.update(_sm())
    p.update(_sm(running=1, eta_s=590.0))   # a trial starting or the ETA moving: no new line
    p.update(_sm(running=2, eta_s=580.0))
    p.update(_sm(complete=4))               # a count changed: one line
    p.update(_sm(complete=4, ladder_planned=11, ladder_done=2, phase="promote"))
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert all(len(line) < 120 for line in lines)
    assert "trials 4/20 (3 ok, 1 pruned, 0 failed, 10 skipped)" in lines[0]
    assert "best 0.2512 (trial 4, 281.00M MACs)" in lines[0]
    assert "ladder 2/11 (promote)" in lines[2]


def test_confirmed_best_is_shown_with_its_spread():
    out = io.StringIO()
    p = Progress("x", quiet=True, stream=out)
    p.update(_sm(best={"number": 9, "val_acc": 0.31, "macs": 2_000_000, "confirmed": True,
                       "std": 0.012, "seeds": 2}))
    assert "best 0.3100 +/- 0.0120 confirmed over 2 seeds (trial 9" in out.getvalue()


def test_results_tables_rank_first_rung_rows_and_list_the_ladder():
    rows = [{"number": 0, "rung": 0, "status": "complete", "val_acc": 0.2, "macs": 10,
             "params": 5, "arch_id": "a"},
            {"number": 1, "rung": 0, "status": "complete", "val_acc": 0.3, "macs": 20,
             "params": 6, "arch_id": "b"},
            {"number": 1, "rung": 1, "seed": 0, "status": "complete", "val_acc": 0.9, "macs": 20,
             "params": 6, "arch_id": "b"}]
    out = io.StringIO()
    results_tables(rows, [], "val_acc", stream=out)
    text = out.getvalue()
    top = text.split("Pareto front")[0]
    assert "top 2 architectures (first rung)" in top and "0.9000" not in top
    assert "ladder (rung 1" in text and "0.9000" in text.split("ladder (rung 1")[1]


def test_startup_lines_say_what_runs():
    """The start-up lines state the proxy's images, epochs, steps, validation images, seeds,
    the ladder and whether ASHA runs -- from the settings, not from a template."""
    from types import SimpleNamespace

    from igcv_nas.cli.search import startup_lines
    from igcv_nas.search.settings import Settings
    from igcv_nas.arch.space import load_space

    space = load_space("igcv3")
    splits = SimpleNamespace(train=range(45_000), val=range(5_000), num_classes=10)
    lines = startup_lines(Settings(macs=300_000_000), space, splits)
    assert lines[0].endswith("budgets at target space: 300M, MACs band floor 210.00M; sampler tpe")
    assert ("on 2,700 of 45,000 training images, 1 epoch(s), 84 steps of batch 32, no dropout; "
            "scored once by val_acc on 5,000 held-out validation images; seeds init 0, data 0"
            in lines[1])
    assert lines[2].startswith("ladder: the best 5 trained again on 3x the images, the best 3 "
                               "of those re-trained with 2 fresh seeds each")
    assert "about 53 first-rung trainings" in lines[2]
    assert lines[3] == "early stopping: none (ASHA off)"
    zc = startup_lines(Settings(macs=300_000_000, proxy="zero-cost"), space, splits)
    assert zc[1].startswith("proxy: zero-cost score zc_synflow") and "nothing is trained" in zc[1]
    assert len(zc) == 2  # no ladder, no early-stopping line: nothing trains
    asha = startup_lines(Settings(macs=300_000_000, scheduler="asha",
                                  budget={**Settings().proxy_budget().to_dict(),
                                          "train": {**Settings().proxy_budget().train.to_dict(),
                                                    "epochs": 4}}), space, splits)
    assert asha[2].startswith("early stopping: ASHA on (reduction factor 3")
    both = startup_lines(Settings(macs=300_000_000, proxy="both"), space, splits)
    assert both[-1].startswith("zero-cost beside training: none (no zero-cost proxy ranked "
                               "positively in the fidelity benchmark for space igcv3")
