#!/usr/bin/env python
"""Choose successive-halving rungs by simulating halving on an exhaustive study's own validation curves.

No training: every run of the exhaustive grid trained to its full budget and logged ``val/acc`` at each
validation (its W&B offline history), so what halving would have kept at each rung can be read back.
The rule simulated is the grid sweeper's (issue 21):

- A cell is (strategy, training-set size, seed) (the report's cell); its configurations are its completed runs.
  A cell with one configuration (the linear probe) is not halved.
- A run plans E epochs (its record's ``epochs``) and validates every k = ceil(E / max_validations) epochs.
- Rung f (a fraction of the run's own planned epochs) stops a run after e_f = min(E, k * ceil(f * E / k))
  epochs; the schedule is never compressed, so the curve up to e_f is the full run's. Its rung score is its
  best ``val/acc`` over the validations up to and including epoch e_f.
- At each rung a cell keeps the top ceil(n / eta) of its n configurations, ranked by the report's rule
  (:mod:`transferlab.report.selection`: higher score rounded to 9 decimals, then smaller ``optimizer.lr``,
  then smaller backbone LR, then the configuration's text, then the path).
- The last rung's survivors run to the full budget; the selected one is the best by full ``val/acc_best``
  (same rule). A pruned run trained e_f * steps / epochs optimizer steps, a survivor its full steps.

Each candidate (rungs, eta) is compared with the exhaustive selection (the report's own, over the same runs).

    python benchmarks/simulate_halving.py runs/digits_split_transfer/fair_x_fraction \\
        --json benchmarks/results/halving-simulation-split.json
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
import zlib
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import pandas as pd
from wandb.proto import wandb_internal_pb2

from transferlab.report.load import scan
from transferlab.report.selection import select_runs
from transferlab.report.stats import mean_ci

#: RUNGS:ETA: the six the issue's work asked for, then the cheapest at <= 0.5x steps and a gentle one
CANDIDATES = ("1/3:3", "1/9,1/3:3", "1/4,1/2:2", "1/2:2", "1/3,2/3:2", "1/9,1/3:2", "1/4,1/2:3", "1/2,3/4:2")
STRATEGIES = ("scratch", "finetune", "linear_probe")  # the default and split studies' grid strategies
MAX_VALIDATIONS = 20  # conf/config.yaml's max_validations (run/trainer.py spaces validations by it)
RANKING = ["neg", "lr", "backbone_lr", "config", "path"]  # report.selection.select's sort, after negating the score
Candidate = tuple[tuple[Fraction, ...], int]


def wandb_history(log_file: Path) -> list[dict[str, Any]]:
    """The history rows of a W&B offline transaction log (``run-<id>.wandb``), each ``{key: value}``.

    wandb 0.31 writes the log from its Go core and ships no Python reader, so the framing is read here
    (LevelDB log format: 32 KiB blocks, 7-byte chunk headers, CRC-32 over kind and chunk) and each record is
    decoded with wandb's own protobuf ``Record``: a private API, pinned by tests/test_simulate_halving.py.
    The same framing is read by tests/wandb_records.py for the tests' own W&B checks."""
    data = Path(log_file).read_bytes()
    header = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
    if not data.startswith(header):
        raise ValueError(f"{log_file}: not a W&B transaction log")
    rows: list[dict[str, Any]] = []
    pos, pending, block = len(header), b"", 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        checksum, length, kind = struct.unpack("<IHB", data[pos: pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (checksum, length, kind) == (0, 0, 0):  # block trailer or padding
            pos += left
            continue
        chunk = data[pos + 7: pos + 7 + length]
        if len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != checksum:
            break  # a torn last write
        pos += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL, FIRST start a record; MIDDLE, LAST add
        if kind in (1, 4):  # FULL, LAST end it
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


def validation_curve(run_folder: Path) -> dict[int, float]:
    """Epochs completed → ``val/acc`` at each validation of a run (every W&B offline run below its folder, in
    order: a resumed run's later log wins). Lightning logs ``epoch`` as the 0-based index of the epoch just
    validated, so the validation after ``epoch`` e is after e + 1 epochs."""
    curve: dict[int, float] = {}
    for log_file in sorted(Path(run_folder).glob("wandb/offline-run-*/run-*.wandb")):
        for row in wandb_history(log_file):
            if "val/acc" in row and "epoch" in row:
                curve[int(row["epoch"]) + 1] = float(row["val/acc"])
    return curve


def rung_epochs(epochs: int, rung: Fraction, max_validations: int = MAX_VALIDATIONS) -> int:
    """e_f = min(E, k * ceil(f * E / k)), k = ceil(E / max_validations): the whole validated epochs rung f stops at."""
    every = max(1, math.ceil(epochs / max_validations))
    return min(epochs, every * math.ceil(rung * epochs / every))


def rung_score(curve: dict[int, float], epochs: int) -> float:
    """The best ``val/acc`` over the validations up to and including ``epochs`` (NaN: none yet, ranks last)."""
    seen = [v for e, v in curve.items() if e <= epochs]
    return max(seen) if seen else math.nan


def ranked(cell: pd.DataFrame, score: pd.Series) -> pd.DataFrame:
    """``cell`` best first by ``score``, with the report's tie rule (:data:`RANKING`)."""
    return cell.assign(neg=-score.round(9)).sort_values(RANKING, na_position="last", kind="stable")


def halve(cell: pd.DataFrame, candidate: Candidate) -> tuple[str, float]:
    """The path successive halving selects in ``cell`` and the optimizer steps it trains there."""
    rungs, eta = candidate
    alive, steps = cell, 0.0
    if len(cell) > 1:
        for rung in rungs:
            stops = alive["epochs"].map(lambda e: rung_epochs(int(e), rung))
            scores = pd.Series([rung_score(c, s) for c, s in zip(alive["curve"], stops)], index=alive.index)
            order = ranked(alive, scores)
            keep = math.ceil(len(alive) / eta)
            cut = round(scores[order.index[keep - 1]], 9)  # a tie at the cut goes on, as in the sweeper (halving.promote)
            going = [i for n, i in enumerate(order.index) if n < keep or round(scores[i], 9) == cut]
            for i in order.index:
                if i not in going:
                    steps += stops[i] * alive.at[i, "steps"] / alive.at[i, "epochs"]
            alive = order.loc[going]
    steps += float(alive["steps"].sum())
    return str(ranked(alive, alive["score"])["path"].iloc[0]), steps


def load_runs(folders: Sequence[Path], strategies: Sequence[str]) -> pd.DataFrame:
    """The completed runs of ``strategies`` below ``folders``, one row each: the report's cell keys and tie
    columns, ``selected`` (the report's exhaustive selection), ``test`` (test/acc), ``epochs``, ``steps``
    and ``curve``; raises ValueError when a trained run's history lacks its validations."""
    chosen = select_runs(scan(folders))
    df = chosen.frame
    if df.empty:
        return df
    df = df[df["counted"].astype(bool) & df["strategy"].isin(strategies)].copy()
    df["test"] = pd.to_numeric(df["test/acc"], errors="coerce")
    df["epochs"] = pd.to_numeric(df["epochs"], errors="coerce").fillna(0).astype(int)
    df["steps"] = pd.to_numeric(df["steps"], errors="coerce").fillna(0).astype(float)
    df["curve"] = [validation_curve(Path(p).parent) if s > 0 else {} for p, s in zip(df["path"], df["steps"])]
    for path, curve, best, epochs, steps in zip(df["path"], df["curve"], df["score"], df["epochs"], df["steps"]):
        if steps > 0:
            check_curve(path, curve, int(epochs), float(best))
    return df


def check_curve(path: str, curve: dict[int, float], epochs: int, best: float) -> None:
    """Raise ValueError unless ``curve`` holds every validation the run planned (after epochs k, 2k, …, E)
    and its best is the record's ``val/acc_best``: a gap would make a rung score up a wrong curve."""
    every = max(1, math.ceil(epochs / MAX_VALIDATIONS))
    if sorted(curve) != list(range(every, epochs + 1, every)):
        raise ValueError(f"{path}: its W&B history validated after epochs {sorted(curve)}, not every {every} of "
                         f"{epochs}. Fix: simulate on complete runs whose W&B offline folders are all there")
    if round(max(curve.values()), 6) != round(best, 6):
        raise ValueError(f"{path}: its W&B history's best val/acc ({max(curve.values())}) is not its "
                         f"val/acc_best ({best}). Fix: simulate on the runs' own W&B offline folders")


def cell_outcomes(df: pd.DataFrame, candidate: Candidate) -> pd.DataFrame:
    """Per cell: configurations, the exhaustive and halved selections' test and val, the steps of each."""
    rows = []
    for key, cell in df.groupby(["strategy", "size", "seed"], sort=True):
        path, steps = halve(cell, candidate)
        exhaustive, halved = cell[cell["selected"]].iloc[0], cell[cell["path"] == path].iloc[0]
        if ranked(cell, cell["score"])["path"].iloc[0] != exhaustive["path"]:  # the rule must be the report's
            raise ValueError(f"cell {key}: the simulation's ranking selects another run than the report's")
        rows.append({"strategy": key[0], "size": float(key[1]), "seed": int(key[2]), "n_configs": len(cell),
                     "same": exhaustive["path"] == path, "steps_exhaustive": float(cell["steps"].sum()),
                     "steps_halved": steps, "test_exhaustive": float(exhaustive["test"]),
                     "test_halved": float(halved["test"]), "val_best": float(cell["score"].max()),
                     "smaller_lr": (halved["lr"], halved["backbone_lr"]) < (exhaustive["lr"], exhaustive["backbone_lr"]),
                     "val_halved": float(halved["score"])})
    return pd.DataFrame(rows)


def size_checks(halved: pd.DataFrame) -> tuple[float, int, int]:
    """Over the (strategy, size) pairs of halved cells: the largest |change| of the mean selected test acc
    (points), how many pass the issue's test (mean change within 0.5 point, or 0 inside the paired 95 %
    interval of the per-seed changes), and how many pairs there are."""
    largest, passed, pairs = 0.0, 0, 0
    for _, g in halved.groupby(["strategy", "size"]):
        mean, _, low, high = mean_ci(100 * (g["test_halved"] - g["test_exhaustive"]))
        largest, pairs = max(largest, abs(mean)), pairs + 1
        passed += abs(mean) <= 0.5 or (low <= 0 <= high)
    return largest, passed, pairs


def summarize(out: pd.DataFrame) -> dict[str, Any]:
    """The comparison over some cells' outcomes; change, worst and regret over the halved cells, in points."""
    halved = out[out["n_configs"] > 1]
    change = 100 * (halved["test_halved"] - halved["test_exhaustive"])
    largest, passed, pairs = size_checks(halved)
    return {"cells": int(len(out)), "halved_cells": int(len(halved)), "same_config": int(halved["same"].sum()),
            "steps_exhaustive": float(out["steps_exhaustive"].sum()),
            "steps_halved": float(out["steps_halved"].sum()),
            "steps_ratio": float(out["steps_halved"].sum() / max(out["steps_exhaustive"].sum(), 1.0)),
            "mean_test_change_pt": float(change.mean()) if len(halved) else 0.0,
            "worst_test_change_pt": float(change.min()) if len(halved) else 0.0,
            "mean_val_regret_pt": float(100 * (halved["val_best"] - halved["val_halved"]).mean()) if len(halved) else 0.0,
            "changed_to_smaller_lr": int((halved["smaller_lr"] & ~halved["same"]).sum()),
            "largest_strategy_size_mean_change_pt": largest, "strategy_sizes_within": passed,
            "strategy_sizes": pairs}


def top_strategies(out: pd.DataFrame, column: str) -> dict[float, str]:
    """Per size, the strategy with the highest mean selected test accuracy (a proxy for the report's
    recommendation, which also weighs paired intervals and cost)."""
    means = out.groupby(["size", "strategy"])[column].mean().reset_index()
    return {float(s): str(g.sort_values([column, "strategy"], ascending=[False, True])["strategy"].iloc[0])
            for s, g in means.groupby("size")}


def evaluate(df: pd.DataFrame, text: str) -> dict[str, Any]:
    """One candidate's comparison: overall, per strategy and per (strategy, size)."""
    candidate = parse_candidate(text)
    out = cell_outcomes(df, candidate)
    tops = (top_strategies(out, "test_exhaustive"), top_strategies(out, "test_halved"))
    per_size = {f"{s}@{z:g}": summarize(g) for (s, z), g in out.groupby(["strategy", "size"])}
    return {"candidate": text, "rungs": [str(r) for r in candidate[0]], "eta": candidate[1],
            **summarize(out), "same_top_strategy_sizes": sum(tops[0][z] == tops[1][z] for z in tops[0]),
            "sizes": len(tops[0]), "top_strategy_exhaustive": tops[0], "top_strategy_halved": tops[1],
            "per_strategy": {s: summarize(g) for s, g in out.groupby("strategy")}, "per_strategy_size": per_size}


def parse_candidate(text: str) -> Candidate:
    """``"1/9,1/3:3"`` → ((1/9, 1/3), 3); raises ValueError for rungs not rising in (0, 1) or eta < 2."""
    try:
        rungs_text, eta_text = text.split(":")
        rungs, eta = tuple(Fraction(r) for r in rungs_text.split(",")), int(eta_text)
    except ValueError:
        raise ValueError(f"candidate {text!r} is not RUNGS:ETA. Fix: e.g. 1/9,1/3:3") from None
    if not all(0 < r < 1 for r in rungs) or list(rungs) != sorted(set(rungs)) or eta < 2:
        raise ValueError(f"candidate {text!r} needs rising rungs between 0 and 1 and eta >= 2. Fix: e.g. 1/4,1/2:2")
    return rungs, eta


def _pt(v: float) -> str:
    return f"{v:+.2f} pt"


def table(results: list[dict[str, Any]]) -> str:
    """The markdown comparison: one row per candidate, then one per candidate and strategy."""
    head = ("| rungs | eta | strategy | same configuration selected | steps | mean change in selected test acc "
            "| worst | mean val regret | changed cells that went to a smaller LR | largest \\|change\\| of a (strategy, size) mean "
            "| (strategy, size) within 0.5 pt or paired 95 % CI | top strategy same |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
    lines = []
    for r in results:
        groups = [("all", r), *sorted(r["per_strategy"].items())]
        for name, s in groups:
            if s["halved_cells"] == 0:
                continue
            top = f"{r['same_top_strategy_sizes']} of {r['sizes']} sizes" if name == "all" else ""
            lines.append(f"| {', '.join(r['rungs'])} | {r['eta']} | {name} | {s['same_config']} of "
                         f"{s['halved_cells']} cells | {s['steps_ratio']:.2f}× | {_pt(s['mean_test_change_pt'])} | "
                         f"{_pt(s['worst_test_change_pt'])} | {s['mean_val_regret_pt']:.2f} pt | "
                         f"{s['changed_to_smaller_lr']} of {s['halved_cells'] - s['same_config']} | "
                         f"{s['largest_strategy_size_mean_change_pt']:.1f} pt | "
                         f"{s['strategy_sizes_within']} of {s['strategy_sizes']} | {top} |")
    return head + "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="run folders of an exhaustive study (read only)")
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), help="RUNGS:ETA, e.g. 1/9,1/3:3")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), help="the strategies simulated")
    parser.add_argument("--json", type=Path, help="write the comparison here")
    parser.add_argument("--markdown", type=Path, help="write the markdown table here (it is printed too)")
    args = parser.parse_args(argv)
    try:
        [parse_candidate(c) for c in args.candidates]
        df = load_runs(args.folders, args.strategies)
    except ValueError as err:
        sys.exit(f"simulate_halving: error: {err}")
    if df.empty:
        sys.exit(f"simulate_halving: error: no completed run of {', '.join(args.strategies)} below "
                 f"{', '.join(map(str, args.folders))}. Fix: pass the folder of an exhaustive study's runs")
    results = {"folders": [str(f) for f in args.folders], "strategies": list(args.strategies),
               "runs": int(len(df)), "rule": "\n\n".join(__doc__.split("\n\n")[1:3]),
               "candidates": [evaluate(df, c) for c in args.candidates]}
    text = table(results["candidates"])
    print(text, end="")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(text)
    return results


if __name__ == "__main__":
    main()
