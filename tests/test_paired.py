"""Paired comparisons on hand-made result sets: the report pairs strategies by draw, refuses to pair runs whose
draws (or seeds, or source models) differ, agrees with scipy.stats, claims nothing it cannot test, and names
the sources of variation its spread covers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from test_report import make_record, write
from transferlab.report.cli import analyse, scan_results, write_report
from transferlab.report.findings import findings, power_note
from transferlab.report.paired import PAIRED, UNTESTED, WELCH, compare
from transferlab.report.plot import _plot_strategies, _pyplot
from transferlab.report.stats import fmt_p
from transferlab.report.variation import sources_of_variation

# the draw matters more than the strategy: a large effect of the draw shared by both strategies, a small
# consistent gap between them (Welch cannot see it through the draws' spread; the paired test can)
BASE = [0.55, 0.70, 0.62, 0.80, 0.66]
FINETUNE = [b + d for b, d in zip(BASE, (0.030, 0.020, 0.025, 0.040, 0.020))]
PROBE = [b + d for b, d in zip(BASE, (0.000, 0.020, -0.010, 0.010, 0.005))]  # one tie with finetune-0.02: no


def draw(seed: int, frac: float = 0.1) -> str:
    return f"d{frac}-{seed}"


def runs(root: Path, strategy: str, accs: list[float], frac: float = 0.1, draws: dict[int, str] | None = None,
         source_seed: object = 0, seeds: list[int] | None = None, time_s: float = 1.0) -> None:
    """One selected run per seed, each naming its draw (the same for every strategy at a seed unless ``draws``
    says otherwise) and its source model's seed (``"seed"``: the run's own)."""
    for seed, acc in zip(seeds if seeds is not None else range(len(accs)), accs):
        src = None if strategy == "scratch" else (seed if source_seed == "seed" else source_seed)
        name = f"{strategy}-{frac}-{seed}"
        write(root / name, make_record(strategy, frac, seed, acc, config_hash=name, train_time_s=time_s,
                                       subset_seed=seed, draw=(draws or {}).get(seed, draw(seed, frac)), source_seed=src))


def row(summary: pd.DataFrame, strategy: str, size: float = 0.1) -> pd.Series:
    sel = summary[(summary["strategy"] == strategy) & np.isclose(summary["size"], size)]
    assert len(sel) == 1, sel
    return sel.iloc[0]


def summary_of(root: Path) -> pd.DataFrame:
    return analyse(scan_results([root])).summary


def test_the_paired_statistics_agree_with_scipy(tmp_path: Path) -> None:
    runs(tmp_path, "finetune", FINETUNE)
    runs(tmp_path, "linear_probe", PROBE)
    summary = summary_of(tmp_path)
    ft, lp = row(summary, "finetune"), row(summary, "linear_probe")
    c = compare(lp, ft)
    assert c.test == PAIRED and c.paired and c.n == 5 and c.note == ""
    assert c.p == pytest.approx(stats.ttest_rel(PROBE, FINETUNE, alternative="less").pvalue, rel=1e-12)
    assert compare(ft, lp).p == pytest.approx(stats.ttest_rel(FINETUNE, PROBE, alternative="less").pvalue, rel=1e-12)
    d = np.subtract(PROBE, FINETUNE)
    assert c.diff == pytest.approx(d.mean(), abs=1e-12)
    interval = stats.ttest_rel(PROBE, FINETUNE).confidence_interval(0.95)
    assert c.ci == pytest.approx((interval.low, interval.high), abs=1e-12)
    assert c.wins == pytest.approx(np.mean(d > 0) + 0.5 * np.mean(d == 0))  # P(probe > finetune)
    assert compare(ft, lp).wins == pytest.approx(1 - c.wins)
    # the report's table, the higher mean first: finetune − probe, its interval, p for finetune better, P(A>B)
    md = write_report([tmp_path], tmp_path / "out").md.read_text()
    table = md.split("## Paired comparisons", 1)[1].split("##", 1)[0]
    p_above = stats.ttest_rel(FINETUNE, PROBE, alternative="greater").pvalue
    assert (f"| fraction 0.1 | finetune vs linear_probe | 5 | {-d.mean():+.4f} [{-interval.high:+.4f}, "
            f"{-interval.low:+.4f}] | {fmt_p(p_above)} | {1 - c.wins:.2f} | paired t-test |") in table


def test_the_report_pairs_by_draw_and_the_claims_rest_on_the_paired_test(tmp_path: Path) -> None:
    runs(tmp_path, "finetune", FINETUNE)
    runs(tmp_path, "scratch", BASE)
    summary = summary_of(tmp_path)
    c = compare(row(summary, "scratch"), row(summary, "finetune"))
    p_paired = stats.ttest_rel(BASE, FINETUNE, alternative="less").pvalue
    p_welch = stats.ttest_ind(BASE, FINETUNE, equal_var=False, alternative="less").pvalue
    assert p_paired < 0.05 < p_welch  # the case the pairing decides
    assert c.test == PAIRED and c.p == pytest.approx(p_paired)
    at = next(ln for ln in findings(summary) if ln.startswith("At fraction 0.1,"))
    assert f"significantly better than scratch (paired t-test, n=5, {fmt_p(p_paired)})" in at
    assert next(ln for ln in findings(summary) if ln.startswith("Scratch ")).startswith("Scratch never catches up")


@pytest.mark.parametrize(("change", "note"), [
    ({"draws": {2: "another"}}, "not paired: the draws differ at seed 2"),
    ({"seeds": [0, 1, 2, 3, 5]}, "not paired: seed 4, 5 run for one side only"),
    ({"source_seed": 7}, "not paired: the source models differ at seed 0"),
])
def test_runs_that_cannot_be_paired_fall_back_to_welch_with_a_note(tmp_path: Path, change: dict, note: str) -> None:
    runs(tmp_path, "finetune", FINETUNE)
    runs(tmp_path, "linear_probe", PROBE, **change)
    summary = summary_of(tmp_path)
    c = compare(row(summary, "linear_probe"), row(summary, "finetune"))
    assert c.test == WELCH and not c.paired and c.note == note and c.wins is None
    assert c.p == pytest.approx(stats.ttest_ind(PROBE, FINETUNE, equal_var=False, alternative="less").pvalue)
    at = next(ln for ln in findings(summary) if ln.startswith("At fraction 0.1,"))
    assert f"linear_probe (Welch's t-test, {fmt_p(c.p)}; {note})" in at
    md = write_report([tmp_path], tmp_path / "out").md.read_text()
    assert f"| fraction 0.1 | finetune vs linear_probe | — |" in md and note in md


def test_the_source_models_of_one_seed_pair_whatever_seed_they_follow(tmp_path: Path) -> None:
    """``source.seed=${seed}``: at each seed both transfer strategies start from that seed's source model: paired."""
    runs(tmp_path, "finetune", FINETUNE, source_seed="seed")
    runs(tmp_path, "linear_probe", PROBE, source_seed="seed")
    runs(tmp_path, "scratch", BASE)  # no source model: pairs with either
    summary = summary_of(tmp_path)
    assert compare(row(summary, "linear_probe"), row(summary, "finetune")).test == PAIRED
    assert compare(row(summary, "scratch"), row(summary, "finetune")).test == PAIRED
    text = sources_of_variation(summary)
    assert "includes the draw of training examples (each seed its own subset)" in text
    assert "initialisation and data order (5 seeds); the source model's seed (5 source seeds)." in text


def test_with_one_seed_no_claim_of_significance_is_made(tmp_path: Path) -> None:
    runs(tmp_path, "finetune", [0.95])
    runs(tmp_path, "linear_probe", [0.60])
    runs(tmp_path, "scratch", [0.10])
    runs(tmp_path, "finetune", [0.95], 1.0)
    runs(tmp_path, "scratch", [0.97], 1.0)  # a higher mean on one draw is no test either: no "catches up"
    summary = summary_of(tmp_path)
    c = compare(row(summary, "scratch"), row(summary, "finetune"))
    assert c.test == UNTESTED and c.p is None and c.paired and c.note == "1 paired draw, a test needs 2"
    lines = findings(summary)
    assert not any("significantly" in ln or "p n/a" in ln for ln in lines), lines
    assert "not tested against linear_probe (1 paired draw, a test needs 2)" in lines[0]
    assert any(ln.startswith("Scratch catch-up not tested: at the largest size, fraction 1,") for ln in lines), lines
    assert not any("catches up" in ln for ln in lines), lines
    assert any(ln.startswith("Negative transfer not tested") for ln in lines), lines
    md = write_report([tmp_path], tmp_path / "out").md.read_text()
    answer = md.split("## Answer", 1)[1].split("Per size the recommended", 1)[0]
    assert "significantly" not in answer and "not tested against" in answer
    assert "With 1 seed per strategy and size no test can be made, so no claim is made." in md
    assert "The spread covers no source of variation: 1 seed" in md


def test_seed_counts_in_the_text_are_the_actual_counts(tmp_path: Path) -> None:
    runs(tmp_path / "two", "finetune", FINETUNE[:2])
    runs(tmp_path / "two", "scratch", BASE[:2])
    md = write_report([tmp_path / "two"], tmp_path / "out").md.read_text()
    assert "With 2 seeds per strategy and size" in md and "(2 seeds)" in md and "3 seeds" not in md
    runs(tmp_path / "mixed", "finetune", FINETUNE[:4])
    runs(tmp_path / "mixed", "scratch", BASE[:2])
    assert power_note(summary_of(tmp_path / "mixed")).startswith("With 2 to 4 seeds per strategy and size")


def test_the_spread_names_the_sources_of_variation_it_covers(tmp_path: Path) -> None:
    for frac in (0.1, 1.0):  # at fraction 1.0 every seed trains on the whole split: one draw
        runs(tmp_path / "drawn", "finetune", FINETUNE, frac, draws={s: "all" for s in range(5)} if frac == 1.0 else None)
        runs(tmp_path / "drawn", "scratch", BASE, frac, draws={s: "all" for s in range(5)} if frac == 1.0 else None)
    text = sources_of_variation(summary_of(tmp_path / "drawn"))
    assert text == ("The spread over seeds includes the draw of training examples (each seed its own subset, except "
                    "at fraction 1, where every seed trained on the same examples, e.g. the whole training split); "
                    "initialisation and data order (5 seeds). It does not include the source model's seed (every "
                    "transfer run started from the model of source seed 0).")
    fixed = {s: "fixed" for s in range(5)}  # dataset.subset_seed fixed: one draw for every seed
    runs(tmp_path / "fixed", "finetune", FINETUNE, draws=fixed)
    runs(tmp_path / "fixed", "scratch", BASE, draws=fixed)
    text = sources_of_variation(summary_of(tmp_path / "fixed"))
    assert text.startswith("The spread over seeds includes initialisation and data order (5 seeds). It does not "
                           "include the draw of training examples (every seed trained on the same examples)")
    for seed, acc in enumerate(BASE):  # records written before draws were recorded
        write(tmp_path / "old" / str(seed), make_record("scratch", 0.1, seed, acc, config_hash=f"old{seed}"))
    assert "Unknown from the records: the draw of training examples" in sources_of_variation(summary_of(tmp_path / "old"))


def test_the_learning_curve_shows_every_draw(tmp_path: Path) -> None:
    for frac in (0.1, 1.0):
        runs(tmp_path, "finetune", FINETUNE, frac)
        runs(tmp_path, "scratch", BASE[:3], frac)
    summary = summary_of(tmp_path)
    plt = _pyplot()
    from matplotlib.collections import PathCollection  # matplotlib's Agg backend first (_pyplot)

    fig, (ax_acc, ax_time) = plt.subplots(1, 2)
    try:
        _plot_strategies(summary, "n_train", ax_acc, ax_time)
        dots = [c for c in ax_acc.collections if isinstance(c, PathCollection)]
        points = sorted(float(y) for c in dots for y in c.get_offsets()[:, 1])
    finally:
        plt.close(fig)
    assert points == pytest.approx(sorted([*FINETUNE, *BASE[:3]] * 2))  # every draw of every size, a dot each


def test_a_strategy_that_took_no_optimizer_step_is_not_drawn_at_an_lr(tmp_path: Path) -> None:
    """The solved probe (``steps`` 0) never used its ``optimizer.lr``: the LR view leaves it out and says so."""
    for seed in range(2):
        for lr, acc in ((0.001, 0.7), (0.01, 0.8)):
            name = f"ft-{seed}-{lr}"
            write(tmp_path / name, make_record("finetune", 0.1, seed, acc, config_hash=name, steps=100,
                                               hparams={"optimizer.lr": lr}, draw=draw(seed), subset_seed=seed))
        write(tmp_path / f"lp-{seed}", make_record("linear_probe", 0.1, seed, 0.75, config_hash=f"lp-{seed}", steps=0,
                                                   hparams={"optimizer.lr": 0.001}, draw=draw(seed), subset_seed=seed))
    a = analyse(scan_results([tmp_path]))
    assert set(a.lr_view["strategy"]) == {"finetune"}
    md = write_report([tmp_path], tmp_path / "out").md.read_text()
    sens = md.split("## Sensitivity", 1)[1].split("## Findings", 1)[0]
    assert "| linear_probe |" not in sens and "Left out: linear_probe, which took no optimizer step" in sens
    assert "| linear_probe | 0.1 |" in md  # still in the results
