"""What a run reads besides its config, and what to do when it changed under a completed run.

``inputs_fingerprint`` names the data before anything loads (``data.registry.data_fingerprint``, cheap:
names, versions and file stamps, never an image): the dataset, the source task's dataset when the weights
come from it, and a weights file. Its digest is part of the config hash, so a completed run is skipped only
when its data is the same. A completed run of the same config whose data changed runs again: its files are
first moved, not deleted, to ``superseded/<its config_hash>/`` inside its folder (``set_aside``), and the new
record says what changed (``replaces``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from transferlab.data.fingerprint import changes, fingerprint
from transferlab.data.registry import data_fingerprint
from transferlab.identity import digest, is_path
from transferlab.record import RESULT_FILE, RUN_LOCK, SUPERSEDED
from transferlab.config.plain import plain

#: what stays in a run folder when its files are set aside: Hydra's record of the job that runs now (its
#: config and its log file, open for writing), the lock and the folder of earlier results
KEPT_IN_PLACE = (".hydra", RUN_LOCK, SUPERSEDED)


def inputs_fingerprint(cfg: DictConfig) -> dict[str, Any]:
    """Per config key, the fingerprint of what the run reads there, and ``digest`` over them all.

    Paths must already be absolute (``identity.with_absolute_paths``). Raises the source's ConfigError or
    DataError when the data is not there or is laid out wrongly, before anything is loaded.
    """
    parts: dict[str, Any] = {"dataset": data_fingerprint(plain(cfg.dataset))}
    weights = cfg.backbone.get("weights")
    if weights == "source" and cfg.get("source") is not None and cfg.source.get("dataset") is not None:
        parts["source.dataset"] = data_fingerprint(plain(cfg.source.dataset))
    elif is_path(weights):
        parts["backbone.weights"] = fingerprint("file", {os.path.basename(str(weights)): [str(weights)]}, path=str(weights))
    return {**parts, "digest": digest(parts)}


def _where(key: str, part: dict[str, Any]) -> str:
    """``dataset (folder /x/imgs)``: a config key and what it names, for messages."""
    named = part.get("root") or part.get("manifest") or part.get("path") or part.get("name") or part.get("version")
    return f"{key} ({part.get('kind')}{f' {named}' if named else ''})"


def what_changed(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """What differs between the inputs a completed run recorded (``old``) and the current ones, in words."""
    if not old:
        return ["the completed run recorded no fingerprint of its data (it was written by an earlier transferlab)"]
    out = []
    for key in [k for k in {**old, **new} if k != "digest"]:
        before, now = old.get(key), new.get(key)
        if before == now:
            continue
        if before is None or now is None:
            out.append(f"{_where(key, now or before)} is {'read now' if before is None else 'no longer read'}")
        else:
            out.append(f"{_where(key, now)}: {', '.join(changes(before, now))}")
    return out or ["the fingerprint of its data differs"]


def set_aside(out_dir: Path, config_hash: str | None) -> Path:
    """Move the files of the completed run in ``out_dir`` to ``out_dir/superseded/<config_hash>[-n]/``
    (``result.json`` last: a kill midway leaves the completed record in place, to be set aside again)."""
    base = Path(out_dir) / SUPERSEDED / str(config_hash or "unknown")
    dest, n = base, 1
    while dest.exists():
        n += 1
        dest = base.with_name(f"{base.name}-{n}")
    dest.mkdir(parents=True)
    entries = [p for p in Path(out_dir).iterdir() if p.name not in KEPT_IN_PLACE and p.suffix != ".log"]
    for entry in sorted(entries, key=lambda p: p.name == RESULT_FILE):
        os.replace(entry, dest / entry.name)
    return dest
