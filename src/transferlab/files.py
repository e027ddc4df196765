"""Files that other processes read while this one writes: atomic writes, JSON records and a lock (filelock's)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from filelock import FileLock, lock_descriptor, unlock_descriptor


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


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as indented JSON, written atomically (callers redact secrets first)."""
    text = json.dumps(data, indent=2, default=str).encode()
    atomic_write(path, lambda f: f.write(text))


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing, left in place) meanwhile: ``filelock.FileLock``,
    an ``flock`` on Unix, so the lock ends with the process, however it ends.

    The one lock of the package's shared caches (features, source weights): concurrent jobs that want
    the same entry wait for one of them to make it, then read it. It also marks a run folder as taken by
    the process that runs it (``record.RUN_LOCK``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path):
        yield


def is_locked(path: Path) -> bool:
    """Whether a process holds ``file_lock(path)`` now (asked without waiting; False when there is no such file).

    The file is opened read-only and probed with filelock's ``lock_descriptor`` (the primitive its ``FileLock``
    uses), so a reader without write access to the folder can ask too; ``FileLock`` itself needs write access.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        if not lock_descriptor(fd, blocking=False):
            return True
        unlock_descriptor(fd)
        return False
    finally:
        os.close(fd)
