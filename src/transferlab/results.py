"""The per-run record ``result.json``: hashing the config, atomic writes, reading back."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from omegaconf import DictConfig, OmegaConf

RESULT_FILE = "result.json"

#: config keys that do not change a run's numbers, left out of its hash
HASH_EXCLUDE: tuple[str, ...] = (
    "logger",
    "paths",
    "keep_checkpoints",
    "checkpoint_every_s",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "backbone.compile",
    "backbone.grad_checkpointing",
    "dataset.num_workers",
    "dataset.pin_memory",
    "dataset.persistent_workers",
)

#: environment variable names whose values must never be logged
SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")


def resolved(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The config as a plain, fully resolved dict."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return json.loads(json.dumps(cfg, default=str))


def config_hash(cfg: DictConfig | Mapping[str, Any]) -> str:
    """SHA-256 (first 16 hex digits) of the resolved config without the keys in ``HASH_EXCLUDE``."""
    plain = resolved(cfg)
    for dotted in HASH_EXCLUDE:
        *parents, leaf = dotted.split(".")
        node: Any = plain
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def redact(obj: Any) -> Any:
    """Replace values under secret-looking keys (api_key, token, password…) and secret env values."""
    return _redact(obj, _env_secrets())


def _env_secrets() -> set[str]:
    return {v for k, v in os.environ.items() if any(m in k.upper() for m in SECRET_MARKERS) and len(v) >= 8}


#: ``name=value`` (command-line override) or ``name: value`` (YAML) where the name's last part looks secret
_SECRET_ASSIGNMENT = re.compile(
    r"(?P<key>[\w.+~/-]*(?:api_?key|token|secret|password|passwd|credentials?)(?:_[a-z0-9]+)*)"
    r"(?P<sep>=|:[ \t]+)(?P<value>['\"]?(?!null\b|None\b|\*\*\*)[^\s,'\"\]}]+['\"]?)",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    """Mask secret environment values and ``api_key=…`` / ``token: …`` assignments in free text."""
    for secret in _env_secrets():
        text = text.replace(secret, "***")
    return _SECRET_ASSIGNMENT.sub(lambda m: f"{m['key']}{m['sep']}***", text)


@contextlib.contextmanager
def redacted_argv() -> Iterator[None]:
    """Mask secrets in ``sys.argv`` meanwhile (W&B records the command line in the run's metadata)."""
    saved = sys.argv
    sys.argv = [redact_text(a) for a in saved]
    try:
        yield
    finally:
        sys.argv = saved


def _redact(obj: Any, secrets: set[str]) -> Any:
    if isinstance(obj, Mapping):
        return {
            k: "***" if any(m in str(k).upper() for m in SECRET_MARKERS) and v not in (None, "") else _redact(v, secrets)
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return [_redact(v, secrets) for v in obj]
    if isinstance(obj, str):
        for secret in secrets:
            obj = obj.replace(secret, "***")
    return obj


def atomic_write(path: Path, write: Callable[[IO[bytes]], None], mode: int | None = None) -> None:
    """Write through a temporary file in the same folder, fsync, then rename: readers never see half a file.

    The temporary file is private (``mkstemp``); ``mode`` (e.g. ``0o644`` for a cache other users share)
    sets the permissions the file ends up with.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, record: Mapping[str, Any]) -> None:
    """``record`` (secrets redacted) as JSON, written atomically."""
    text = json.dumps(redact(record), indent=2, default=str).encode()
    atomic_write(path, lambda f: f.write(text))


def read_result(out_dir: Path) -> dict[str, Any] | None:
    """The run's record, or None when there is none or it cannot be read."""
    try:
        return json.loads((Path(out_dir) / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None


def is_completed(out_dir: Path, cfg_hash: str) -> dict[str, Any] | None:
    """The record when ``out_dir`` holds a completed run of the same config, else None."""
    record = read_result(out_dir)
    if record and record.get("status") == "completed" and record.get("config_hash") == cfg_hash:
        return record
    return None
