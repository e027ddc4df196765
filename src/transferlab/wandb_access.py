"""Whether W&B can go online here: an API key and the network, else offline (``wandb sync`` uploads later)."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

log = logging.getLogger(__name__)


def wandb_mode(requested: str | None) -> str:
    """``online`` only when asked (or ``auto``) and a key and the network are there; else ``offline``."""
    env = os.environ.get("WANDB_MODE")
    mode = (requested or "auto") if requested not in (None, "auto") else (env or "auto")
    if mode in ("offline", "disabled", "dryrun"):
        return "offline" if mode == "dryrun" else mode
    has_key = bool(os.environ.get("WANDB_API_KEY")) or _netrc_has_wandb()
    if not has_key or not _reachable("api.wandb.ai", 443):
        if mode == "online":
            log.warning("W&B: no API key or no network; logging offline instead (sync later with `wandb sync`).")
        return "offline"
    return "online"


def _netrc_has_wandb() -> bool:
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def _reachable(host: str, port: int, timeout_s: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
