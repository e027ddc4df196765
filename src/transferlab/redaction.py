"""Secrets never reach a record, a log or a tracker: masking in values, mappings, text and ``sys.argv``."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator, Mapping
from typing import Any

#: environment variable names (and config keys) whose values must never be logged
SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")

#: ``name=value`` (command-line override) or ``name: value`` (YAML) where the name's last part looks secret
_SECRET_ASSIGNMENT = re.compile(
    r"(?P<key>[\w.+~/-]*(?:api_?key|token|secret|password|passwd|credentials?)(?:_[a-z0-9]+)*)"
    r"(?P<sep>=|:[ \t]+)(?P<value>['\"]?(?!null\b|None\b|\*\*\*)[^\s,'\"\]}]+['\"]?)",
    re.IGNORECASE,
)


def redact(obj: Any) -> Any:
    """Replace values under secret-looking keys (api_key, token, password…) and secret env values."""
    return _redact(obj, _env_secrets())


def _env_secrets() -> set[str]:
    return {v for k, v in os.environ.items() if any(m in k.upper() for m in SECRET_MARKERS) and len(v) >= 8}


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
