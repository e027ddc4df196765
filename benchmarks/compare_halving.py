"""Successive halving against the exhaustive grid, on two run folders of the same study (issue 21's measurement).

Both folders go through the report's own code (``transferlab.report``: scan, selection on validation, the
summary, the recommendation), and the comparison is:

- the recommendation at each size;
- per (strategy, size) the mean selected test accuracy, and the mean paired change (halved − exhaustive,
  per seed) with its two-sided 95 % Student-t interval;
- the validation regret per cell: the best full-budget val in the exhaustive cell minus the full-budget val
  of the configuration halving selected;
- how often the same configuration is selected;
- total optimizer steps and train time (and the wall times, read from the benchmark result files).

    python benchmarks/compare_halving.py EXHAUSTIVE_RUNS HALVED_RUNS --wall-json A.json B.json --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from transferlab.record import read_record
from transferlab.report.cli import analyse, scan_results
from transferlab.report.recommend import answers
from transferlab.report.stats import mean_ci

CELL = ["strategy", "size", "seed"]
#: the issue's rule: halving may become the default only if every (strategy, size) mean is within this many points
WITHIN_PT = 0.5


def selected(folder: Path) -> tuple[pd.DataFrame, dict[float, str], pd.DataFrame]:
    """The selected run per cell (test, val, config), the recommendation per size, and every compared run."""
    analysis = analyse(scan_results([folder]))
    frame = analysis.selection.frame
    chosen = frame[frame["selected"].astype(bool)]
    out = chosen.assign(test=pd.to_numeric(chosen["test/acc"]), val=pd.to_numeric(chosen["score"]))
    recommended = {float(a.size.value): str(a.chosen["strategy"]) for a in answers(analysis.summary)}
    return out[[*CELL, "config", "test", "val"]].reset_index(drop=True), recommended, frame


def totals(folder: Path) -> dict[str, Any]:
    """Steps, train time and statuses over every record of the folder."""
    records = [r for p in sorted(folder.rglob("result.json")) if (r := read_record(p.parent)) is not None]
    return {"runs": len(records), "steps": sum(r.steps or 0 for r in records),
            "train_time_s": round(sum(r.train_time_s or 0 for r in records), 1),
            "statuses": {s: sum(r.status.value == s for r in records) for s in sorted({r.status.value for r in records})}}


def per_strategy_size(cells: pd.DataFrame) -> list[dict[str, Any]]:
    """Per (strategy, size): both means, the paired change and its interval, and whether it passes the rule."""
    rows = []
    for (strategy, size), g in cells.groupby(["strategy", "size"], sort=True):
        change, _, low, high = mean_ci(100 * (g["test_h"] - g["test_e"]))
        within = abs(change) <= WITHIN_PT or (not math.isnan(low) and low <= 0 <= high)
        rows.append({"strategy": strategy, "size": float(size), "seeds": int(len(g)),
                     "exhaustive": round(float(g["test_e"].mean()), 4), "halved": round(float(g["test_h"].mean()), 4),
                     "change_pt": round(change, 2), "ci_pt": [round(low, 2), round(high, 2)],
                     "within_0.5_pt": abs(change) <= WITHIN_PT, "passes": bool(within),
                     "same_config": int((g["config_e"] == g["config_h"]).sum())})
    return rows


def compare(exhaustive: Path, halved: Path) -> dict[str, Any]:
    """The whole comparison (see the module doc)."""
    sel_e, rec_e, frame_e = selected(exhaustive)
    sel_h, rec_h, _ = selected(halved)
    cells = sel_e.merge(sel_h, on=CELL, suffixes=("_e", "_h"))
    best_val = frame_e[frame_e["counted"].astype(bool)].groupby(CELL)["score"].max().rename("best_val")
    full_val = frame_e[frame_e["counted"].astype(bool)][[*CELL, "config", "score"]].rename(columns={"config": "config_h"})
    cells = cells.merge(best_val, on=CELL).merge(full_val, on=[*CELL, "config_h"], how="left")
    multi = cells[frame_e.groupby(CELL)["config"].nunique().reindex(pd.MultiIndex.from_frame(cells[CELL])).values > 1]
    regret = 100 * (multi["best_val"] - multi["score"])
    return {
        "recommendation": {f"{s:g}": {"exhaustive": rec_e.get(s), "halved": rec_h.get(s)} for s in sorted(rec_e)},
        "same_recommendations": rec_e == rec_h,
        "per_strategy_size": (rows := per_strategy_size(cells)),
        "all_strategy_sizes_pass": all(r["passes"] for r in rows),
        "all_within_0.5_pt": all(r["within_0.5_pt"] for r in rows),
        "cells_halved": int(len(multi)), "same_config": int((multi["config_e"] == multi["config_h"]).sum()),
        "mean_val_regret_pt": round(float(regret.mean()), 3), "max_val_regret_pt": round(float(regret.max()), 3),
        "exhaustive": totals(exhaustive), "halved": totals(halved),
    }


def markdown(result: dict[str, Any]) -> str:
    """The comparison as the closing note's tables."""
    e, h = result["exhaustive"], result["halved"]
    lines = ["| size | recommended (exhaustive) | recommended (halved) |", "| --- | --- | --- |"]
    lines += [f"| {s} | {r['exhaustive']} | {r['halved']} |" for s, r in result["recommendation"].items()]
    lines += ["", "| strategy | size | exhaustive | halved | change (pt) [95% CI] | same config | passes |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['strategy']} | {r['size']:g} | {r['exhaustive']:.4f} | {r['halved']:.4f} | {r['change_pt']:+.2f} "
              f"[{r['ci_pt'][0]:+.2f}, {r['ci_pt'][1]:+.2f}] | {r['same_config']}/{r['seeds']} | {'yes' if r['passes'] else 'NO'} |"
              for r in result["per_strategy_size"]]
    lines += ["", f"Same configuration in {result['same_config']} of {result['cells_halved']} halved cells; validation regret "
              f"mean {result['mean_val_regret_pt']} pt, max {result['max_val_regret_pt']} pt. Steps {h['steps']:,} vs "
              f"{e['steps']:,} ({h['steps'] / max(e['steps'], 1):.2f}×); train time {h['train_time_s']:,} s vs {e['train_time_s']:,} s."]
    if "wall_s" in result:
        lines.append(f"Wall time (make study from nothing): {result['wall_s']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("exhaustive", type=Path, help="the exhaustive study's sweep folder")
    p.add_argument("halved", type=Path, help="the halved study's sweep folder")
    p.add_argument("--wall-json", type=Path, nargs=2, metavar=("EXHAUSTIVE", "HALVED"),
                   help="benchmark results files whose study.wall_s are the two wall times")
    p.add_argument("--json", type=Path, help="write the comparison here")
    args = p.parse_args(argv)
    result = compare(args.exhaustive, args.halved)
    if args.wall_json:
        walls = [json.loads(f.read_text())["study"] for f in args.wall_json]
        result["wall_s"] = {"exhaustive": walls[0].get("wall_s"), "halved": walls[1].get("wall_s"),
                            "exhaustive_runs": walls[0].get("runs"), "halved_runs": walls[1].get("runs")}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
