"""One scan of the result folders: every ``result.json`` read once, through :mod:`transferlab.record`.

Each file becomes an :class:`Entry`: ``completed`` (averaged), ``pruned`` (stopped at a rung of successive
halving or by Optuna's pruner: compared, never selected, not a problem), ``problem`` (unreadable, not completed,
or completed without a strategy or a numeric test accuracy) or ``duplicate`` (an older record of a
``config_hash`` seen again; the newest by file mtime counts). A :class:`Scan` hands the same entries
to the summary, the problem list and ``results.csv``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from transferlab.files import is_locked
from transferlab.record import RESULT_FILE, RUN_LOCK, SUPERSEDED, TEST_ACC, RecordError, RunRecord, Status, load_record

COMPLETED, PROBLEM, DUPLICATE, PRUNED = "completed", "problem", "duplicate", "pruned"
UNPARSEABLE = "unparseable"  # the status shown for a file that is not a record
#: not failures: runs stopped by a signal (preemption, requeue, time limit), still going, or paused at a
#: rung waiting for the sweeper's decision; they resume
PENDING = (Status.INTERRUPTED.value, Status.RUNNING.value, Status.PAUSED.value)


def count_problems(problems: list[dict[str, str]]) -> dict[str, int]:
    """How many of :meth:`Scan.problems` are ``pending`` (interrupted, running, or paused at a rung), ``failed`` (failed or
    unreadable) and ``duplicate``."""
    n_dup = sum(p["status"] == DUPLICATE for p in problems)
    n_pending = sum(p["status"] in PENDING for p in problems)
    return {"pending": n_pending, "failed": len(problems) - n_dup - n_pending, "duplicate": n_dup}


@dataclass
class Entry:
    """One result file as the report sees it."""

    path: str
    mtime: float
    status: str  # the record's status, or "unparseable"
    kind: str  # COMPLETED | PRUNED | PROBLEM | DUPLICATE
    note: str = ""  # what is wrong (problems and duplicates)
    fields: dict[str, Any] = field(default_factory=dict)  # the record, flattened (empty if unreadable)
    record: RunRecord | None = None


@dataclass(frozen=True)
class Scan:
    """Every result file found below some folders, classified once."""

    entries: list[Entry]

    def _rows(self, entries: Iterable[Entry]) -> pd.DataFrame:
        rows = []
        for e in entries:
            size = e.record.size  # type: ignore[union-attr] - callers pass entries with a record
            rows.append(e.fields | {"path": e.path, "mtime": e.mtime, "counted": e.kind == COMPLETED,
                                    "size_kind": size.kind, "size": size.value})
        return pd.DataFrame(rows)

    def runs(self) -> pd.DataFrame:
        """Completed runs, one row each: the flattened record, ``path``, ``mtime``, ``counted``, ``size_kind``, ``size``."""
        return self._rows(e for e in self.entries if e.kind == COMPLETED and e.record is not None)

    def attempts(self) -> pd.DataFrame:
        """Every configuration tried, one row per record of any status (duplicates left out) that names a
        strategy and a numeric size; the columns of :meth:`runs`, ``counted`` true for the completed ones."""
        return self._rows(e for e in self.entries if e.kind != DUPLICATE and e.record is not None
                          and e.record.strategy and _is_number(e.record.size.value))

    def metric_names(self) -> list[str]:
        """The metric keys the completed runs logged, sorted."""
        return sorted({k for e in self.entries if e.kind == COMPLETED and e.record is not None
                       for k in (e.record.metrics or {})})

    def problems(self) -> list[dict[str, str]]:
        """``{"path", "status", "error"}`` per entry not averaged; status ``duplicate`` for duplicates."""
        return [{"path": e.path, "status": DUPLICATE if e.kind == DUPLICATE else e.status, "error": e.note}
                for e in self.entries if e.kind in (PROBLEM, DUPLICATE)]

    def n_pruned(self) -> int:
        """How many runs a rung or a pruner stopped (compared in their cells, never selected)."""
        return sum(e.kind == PRUNED for e in self.entries)

    def problem_counts(self) -> dict[str, int]:
        """How many entries were not averaged: ``pending`` (interrupted or running), ``failed`` (failed or
        unreadable) and ``duplicate``."""
        return count_problems(self.problems())

    def frame(self) -> pd.DataFrame:
        """All files found (every status), flattened: the rows of ``results.csv``."""
        rows = []
        for e in self.entries:
            row: dict[str, Any] = {"path": e.path, "status": e.status, "counted": e.kind == COMPLETED,
                                   "note": e.note}
            row.update({k: v for k, v in e.fields.items() if k not in row})
            rows.append(row)
        return pd.DataFrame(rows).convert_dtypes()


def first_line(text: Any) -> str:
    """The first line of ``text`` once stripped ("" for None)."""
    s = "" if text is None else str(text)
    lines = s.strip().splitlines()
    return lines[0] if lines else ""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def find_result_files(dirs: Iterable[Path]) -> list[Path]:
    """Every ``result.json`` below ``dirs`` (a file given directly counts too), sorted; not those set aside
    in a ``superseded/`` folder."""
    files: set[Path] = set()
    for d in dirs:
        d = Path(d)
        if d.is_file():
            files.add(d)
        elif d.is_dir():
            # not the records of runs whose data changed since (kept in a run folder's superseded/)
            files.update(p for p in d.rglob(RESULT_FILE) if p.is_file() and SUPERSEDED not in p.relative_to(d).parts[:-1])
        else:
            raise FileNotFoundError(f"no such file or folder: {d}")
    return sorted(files)


def flatten(record: RunRecord) -> dict[str, Any]:
    """The record as one flat row: metrics keep their own names, other dicts give ``key.sub`` columns."""
    flat: dict[str, Any] = {}
    for key, value in record.to_dict().items():
        if key.startswith("_"):
            continue  # names starting with "_" never reach the report's tables
        if key == "metrics" and isinstance(value, dict):
            flat.update(value)
        elif key == "data_fingerprint" and isinstance(value, dict):
            flat["data_fingerprint.digest"] = value.get("digest")  # its per-class stamps stay in result.json
        elif isinstance(value, dict):
            for sub, v in value.items():
                flat[f"{key}.{sub}"] = v if not isinstance(v, (dict, list)) else json.dumps(v)
        elif isinstance(value, list):
            flat[key] = json.dumps(value)
        else:
            flat[key] = value
    return flat


#: what the report says of a ``running`` record whose lock no process holds
KILLED = ("killed? no process holds its lock: run the command that started it again to resume it "
          "(a sweep resumes its unfinished jobs)")


def _not_completed_note(record: RunRecord, path: Path) -> str:
    """Why a record is not averaged; for a ``running`` one, whether its process still runs (holds the lock)."""
    status = record.status.value
    if record.status is Status.RUNNING:
        return "still running (its process holds the run folder's lock)" if is_locked(path.parent / RUN_LOCK) else KILLED
    return first_line(record.error) or f"status is '{status}'"


def read_entry(path: Path) -> Entry:
    """Read and classify one file (duplicates are marked later, by :func:`mark_duplicates`)."""
    mtime = path.stat().st_mtime
    try:
        record = load_record(path)
    except RecordError as exc:
        return Entry(str(path), mtime, UNPARSEABLE, PROBLEM, first_line(exc))
    except OSError as exc:
        return Entry(str(path), mtime, UNPARSEABLE, PROBLEM, f"{type(exc).__name__}: {first_line(exc)}")
    flat = flatten(record)
    entry = Entry(str(path), mtime, record.status.value, COMPLETED, fields=flat, record=record)
    if record.status is Status.PRUNED:
        rung = record.rung or {}
        entry.kind, entry.note = PRUNED, f"pruned after epoch {rung.get('epoch')} of {record.planned_epochs} ({rung.get('by')})"
    elif not record.completed:
        entry.kind, entry.note = PROBLEM, _not_completed_note(record, path)
    elif not _is_number(flat.get(TEST_ACC)) or not record.strategy:
        entry.kind = PROBLEM
        entry.note = f"completed but missing 'strategy' or numeric metrics['{TEST_ACC}']"
    elif not _is_number(record.size.value):
        entry.kind = PROBLEM
        entry.note = f"completed but its training-set size is not a number ({record.size.kind}={record.size.value!r})"
    return entry


def mark_duplicates(entries: list[Entry]) -> None:
    """Within completed and within problem entries, all but the newest (mtime, then path) of a
    ``config_hash`` become duplicates, each saying which record was kept."""
    for kind in (COMPLETED, PRUNED, PROBLEM):
        by_hash: dict[str, list[Entry]] = {}
        for e in entries:
            h = e.record.config_hash if e.record is not None else None
            if e.kind == kind and h:
                by_hash.setdefault(str(h), []).append(e)
        for h, group in by_hash.items():
            if len(group) < 2:
                continue
            group.sort(key=lambda e: (e.mtime, e.path))
            kept = group[-1]
            short = h if len(h) <= 16 else h[:12] + "…"
            for e in group[:-1]:
                e.kind = DUPLICATE
                e.note = f"same config_hash {short} as {kept.path} (kept the newest by mtime; counted once)"


def scan(dirs: Iterable[Path]) -> Scan:
    """Find, read and classify every result file below ``dirs``, once."""
    entries = [read_entry(path) for path in find_result_files(dirs)]
    mark_duplicates(entries)
    return Scan(entries)


def load_results(dirs: list[Path]) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Completed runs (one row each, flattened, deduplicated) and the list of problems (:meth:`Scan.problems`)."""
    found = scan(dirs)
    return found.runs(), found.problems()
