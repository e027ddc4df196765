"""Read a W&B offline run (``run-<id>.wandb``) back: its run record, config, summary, history, x-axes and exit
code; and :class:`RecordingApi`, which stands in for ``wandb.Api`` where there is no network.

wandb ≥ 0.2x writes the transaction log from its Go core and no longer ships the Python ``DataStore``
reader, so the framing is read here (LevelDB log format: 32 KiB blocks, 7-byte chunk headers, CRC-32
checked) and every record is decoded with wandb's own protobuf ``Record`` message.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)  # ident, magic, version
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    if not data.startswith(HEADER):
        raise ValueError(f"{path}: not a W&B transaction log (header {data[:7]!r})")
    out: list[wandb_internal_pb2.Record] = []
    pos, pending = len(HEADER), b""
    while pos + 7 <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:  # block trailer: zero padding
            pos += left_in_block
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if checksum == 0 and length == 0 and kind == 0:  # padding at the end of a block
            pos += left_in_block
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        if len(chunk) < length:
            break  # a torn last write
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != checksum:
            raise ValueError(f"{path}: bad checksum at byte {pos}")
        pos += 7 + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


@dataclass
class OfflineRun:
    """What the offline run holds, in plain Python."""

    id: str = ""
    project: str = ""
    group: str = ""
    job_type: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    n_history: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # every logged row, as logged
    axes: dict[str, str] = field(default_factory=dict)  # define_metric: metric (or glob) → its x-axis ("" none)


def _items(items: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key = item.key or "/".join(item.nested_key)
        out[key] = json.loads(item.value_json)
    return out


def read_run(run_dir: Path) -> OfflineRun:
    """``run_dir``: an ``offline-run-*`` folder (what ``result.json``'s ``wandb.dir`` names)."""
    (log_file,) = Path(run_dir).glob("run-*.wandb")
    run = OfflineRun()
    for record in records(log_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.id, run.project, run.group, run.job_type = r.run_id, r.project, r.run_group, r.job_type
            run.name, run.tags = r.display_name, list(r.tags)
            run.config.update(_items(r.config.update))
        elif kind == "config":
            run.config.update(_items(record.config.update))
        elif kind == "summary":
            run.summary.update(_items(record.summary.update))
        elif kind == "history":
            run.n_history += 1
            run.history.append(_items(record.history.item))
        elif kind == "metric":
            run.axes[record.metric.name or record.metric.glob_name] = record.metric.step_metric
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


class RecordingApi:
    """Stands in for ``wandb.Api`` (no network in the tests): the summary updates it was asked for, by run path."""

    updates: dict[str, dict[str, Any]] = {}

    def run(self, path: str) -> Any:
        updates = self.updates

        class Summary:
            def update(self, values: dict[str, Any]) -> None:
                updates[path] = values

        return type("Run", (), {"summary": Summary()})()
