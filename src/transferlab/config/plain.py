"""A config node as plain Python: the one conversion from OmegaConf's nodes that the package uses (for the
record, hashes, the model's arguments, the trainer's, the source task's config, the sweep's grids)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf


def plain(node: Any) -> Any:
    """``node`` with every interpolation resolved, as plain Python: a DictConfig as a dict, a ListConfig as a
    list, None as ``{}`` (an option left unset), a mapping as a shallow dict copy, anything else as it is."""
    if node is None:
        return {}
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    if isinstance(node, Mapping):
        return dict(node)
    return node
