"""The per-run record ``result.json``: one typed thing, its status, and the only code that reads or writes it.

The fields are those of ``shared/DESIGN.md`` (``RunRecord``). What the run is (identity fields) is always
written; what it measured is written once set, and every field once completed (null where it does not
apply, e.g. ``weights_path`` of scratch), except the fields only some runs have (``error``, ``world_size``
under DDP, ``resumed_from_epoch``), which appear only when set. Fields this version does not know are
kept in ``extra`` and written back unchanged.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from transferlab.files import read_json, write_json_atomic
from transferlab.redaction import redact

RESULT_FILE = "result.json"
#: held (``files.file_lock``) by the process that runs the run in its folder: a ``running`` record whose
#: lock nobody holds is a run that was killed
RUN_LOCK = ".run.lock"
#: the folder, inside a run's folder, that keeps the files of completed runs whose data changed since
#: (``superseded/<their config_hash>/``); readers of results (the report) skip it
SUPERSEDED = "superseded"

#: the strategy every transfer strategy is compared with: random initialisation, no transfer
BASELINE_STRATEGY = "scratch"

#: the metric keys a completed record carries (``metrics``), as Lightning logs them
TEST_ACC = "test/acc"
TEST_F1 = "test/f1_macro"


class Status(str, Enum):
    """A run's state: ``running`` until it ends ``completed`` or ``failed``; ``interrupted`` when a
    preemption or time limit stopped it (it resumes when relaunched). Multi-fidelity selection
    (``run.rungs``): ``paused`` at a rung, waiting for the sweeper's decision (it resumes when promoted);
    ``pruned`` when a rung or Optuna's pruner stopped it for good (compared, never selected)."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    PAUSED = "paused"
    PRUNED = "pruned"


class RecordError(ValueError):
    """A ``result.json`` that cannot be read as a record (the message says why)."""


@dataclass(frozen=True)
class DataSize:
    """The training-set size a run asked for: ``per_class`` examples per class when set, else a ``fraction``.

    The one place where per_class wins over fraction; neither set means the whole training split.
    """

    kind: str  # "fraction" | "per_class"
    value: float

    @classmethod
    def of(cls, fraction: float | None, per_class: int | None) -> DataSize:
        if per_class is not None:
            return cls("per_class", per_class)
        return cls("fraction", 1.0 if fraction is None else fraction)  # as given: run names say f1 for 1

    @property
    def fraction(self) -> float | None:
        return self.value if self.kind == "fraction" else None

    @property
    def per_class(self) -> int | None:
        return int(self.value) if self.kind == "per_class" else None

    @property
    def tag(self) -> str:
        """Short form for run names: ``f0.1`` or ``pc5``."""
        return f"f{self.fraction}" if self.kind == "fraction" else f"pc{self.per_class}"

    def describe(self) -> str:
        """For prose: ``fraction 0.1`` or ``5 per class``."""
        return f"{self.value:g} per class" if self.kind == "per_class" else f"fraction {self.value:g}"


def _identity() -> Any:
    """A field that says what the run is: always written."""
    return field(default=None, metadata={"write": "always"})


def _optional() -> Any:
    """A field only some runs have: written only when set."""
    return field(default=None, metadata={"write": "when set"})


@dataclass
class RunRecord:
    """One run's ``result.json``. Field order is the file's key order."""

    status: Status
    experiment: str | None = _identity()
    sweep: str | None = _identity()
    dataset: str | None = _identity()
    backbone: str | None = _identity()
    weights: str | None = _identity()
    strategy: str | None = _identity()
    head: str | None = _identity()
    fraction: float | None = _identity()
    per_class: int | None = _identity()
    seed: int | None = _identity()
    config_hash: str | None = _identity()
    # the run's tunable hyperparameters by dotted config key (``optimizer.lr``, ``strategy.*``, …): what the
    # report's selection on validation tells configurations apart by; None in records written before it
    hparams: dict[str, Any] | None = _identity()
    # what the run read besides its config, fingerprinted when it started (``run.inputs``): per config key
    # (``dataset``, ``backbone.weights``…) its kind, names, version and per-class file stamps; and ``digest``,
    # which ``config_hash`` covers. None in records written before it.
    data_fingerprint: dict[str, Any] | None = _identity()
    transferlab_version: str | None = None
    host: str | None = None
    n_train: int | None = None
    # the run's draw of training examples: the seed that drew it (dataset.subset_seed, or the run's seed) and a
    # short hash of its training indices (those of train_indices.json); the report pairs strategies by it
    subset_seed: int | None = None
    draw: str | None = None
    source_seed: int | None = None  # source.seed of the source model it started from (backbone.weights=source)
    features_cached: bool | None = None  # whether any epoch trained on cached backbone features
    feature_cache_hit: bool | None = None
    wandb: dict[str, Any] | None = None
    resumed_from_epoch: int | None = _optional()
    resumed_from: str | None = None
    world_size: int | None = _optional()
    ranks_in_sync: bool | None = _optional()
    ddp_mask_mode: bool | None = _optional()
    metrics: dict[str, float] | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    trainable_params_start: int | None = None
    train_time_s: float | None = None
    feature_time_s: float | None = None
    epochs: int | None = None
    steps: int | None = None  # optimizer steps taken (the budget the run had)
    planned_epochs: int | None = None  # the epochs its budget plans (a run stopped at a rung trained fewer)
    val_curve: list[list[float]] | None = None  # every validation's [epochs trained, monitored value]
    # where a paused or pruned run stopped: {fraction, epoch, score, by} (``run.rungs.rung_entry``)
    rung: dict[str, Any] | None = _optional()
    cached_feature_epochs: int | None = None
    probe: dict[str, Any] | None = _optional()  # the L-BFGS probe: chosen l2, validation curve, solver time
    weights_path: str | None = None
    output_dir: str | None = None
    # the completed run this one replaced because its data changed: its config_hash, the folder its files
    # were moved to (``SUPERSEDED``) and what changed
    replaces: dict[str, Any] | None = _optional()
    error: str | None = _optional()
    traceback: str | None = _optional()
    extra: dict[str, Any] = field(default_factory=dict)  # fields this version does not know, kept as read

    @property
    def size(self) -> DataSize:
        return DataSize.of(self.fraction, self.per_class)

    @property
    def completed(self) -> bool:
        return self.status is Status.COMPLETED

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (see the module docstring for which fields are written), then ``extra``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            rule = f.metadata.get("write")
            if value is not None or rule == "always" or (self.completed and rule != "when set"):
                out[f.name] = value.value if isinstance(value, Status) else value
        return {**out, **{k: v for k, v in self.extra.items() if k not in out}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """A record from its JSON object; raises RecordError when ``status`` is missing or unknown."""
        if not isinstance(data, dict):
            raise RecordError(f"expected a JSON object, got {type(data).__name__}")
        try:
            status = Status(data.get("status"))
        except ValueError:
            raise RecordError(f"status is {data.get('status')!r}, not one of {[s.value for s in Status]}") from None
        known = {f.name for f in dataclasses.fields(cls)} - {"status", "extra"}
        values = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known and k != "status"}
        return cls(status=status, **values, extra=extra)


def write_record(out_dir: Path, record: RunRecord) -> None:
    """``out_dir/result.json``, secrets redacted, written atomically (readers never see half a record)."""
    write_json_atomic(Path(out_dir) / RESULT_FILE, redact(record.to_dict()))


def load_record(path: Path) -> RunRecord:
    """The record in the file ``path``; raises RecordError (or OSError) saying why it cannot be read."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(f"{type(err).__name__}: {err}") from err
    return RunRecord.from_dict(data)


def read_record(out_dir: Path) -> RunRecord | None:
    """The record of the run in ``out_dir``, or None when there is none or it cannot be read."""
    data = read_json(Path(out_dir) / RESULT_FILE)
    try:
        return RunRecord.from_dict(data) if data is not None else None
    except RecordError:
        return None


def is_completed(out_dir: Path, cfg_hash: str) -> RunRecord | None:
    """The record when ``out_dir`` holds a completed run of the same config, else None."""
    record = read_record(out_dir)
    if record is not None and record.completed and record.config_hash == cfg_hash:
        return record
    return None
