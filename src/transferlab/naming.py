"""A run's folder name: its command-line overrides, short and flat whatever their values.

``conf/config.yaml`` names each run's folder ``${tl.run_folder:${hydra:overrides.task},${hydra:runtime.cwd}}``:
Hydra's ``override_dirname`` (the overrides ``key=value``, sorted, joined by commas) without the keys of
``identity.RESULT_NEUTRAL_KEYS`` and ``identity.FOLDER_NAMING_KEYS``, except that

- a path (``identity.PATH_KEYS``) shows as its last part and a digest of its absolute path (relative
  paths taken against the launch folder): ``dataset.root=imgs-3fa9c2d1``, one folder per data folder;
- any other value with a ``/`` in it (``backbone.name=hf-hub:timm/…``) has its ``/`` replaced and a digest
  of the value added, so a folder name never holds a ``/``;
- a name longer than ``MAX_NAME_BYTES`` is cut and ends in a digest of the whole.

Everything else renders as Hydra renders it (``dataset.per_class=4,optimizer.lr=0.003,seed=0,strategy=finetune``),
so the folders of runs made before keep their names. The resolver is registered when this module is
imported, as ``transferlab.train`` (the Hydra app, in every launcher's worker too) does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import OmegaConf

from transferlab.identity import FOLDER_NAMING_KEYS, PATH_KEYS, RESULT_NEUTRAL_KEYS, absolute_path, digest, is_path

#: the longest folder name, in bytes (file systems allow 255; Hydra's names failed beyond it)
MAX_NAME_BYTES = 240
#: hex digits of the digests in a folder name
SHORT = 8
#: override keys that never name a folder
EXCLUDED_KEYS = frozenset(RESULT_NEUTRAL_KEYS + FOLDER_NAMING_KEYS)


def _key(override: Override) -> str:
    """The override's key without its ``+``, ``++`` or ``~`` (a neutral key stays neutral when added)."""
    return override.get_key_element().lstrip("+~")


def path_label(path: str) -> str:
    """A path as a name shows it: its last part and a digest of the whole (``imgs-3fa9c2d1``)."""
    return f"{os.path.basename(path) or 'root'}-{digest(path, SHORT)}"


def _item(override: Override, launch_dir: str) -> str:
    """One ``key=value`` of the folder name."""
    line = str(override.input_line)
    left = line.split("=", 1)[0]
    value = override.value() if not override.is_delete() else None
    if _key(override) in PATH_KEYS and is_path(value):
        return f"{left}={path_label(absolute_path(str(value), launch_dir))}"
    if "/" in line:
        return f"{line.replace('/', '_')[:64]}-{digest(line, SHORT)}"
    return line


def _capped(name: str) -> str:
    """``name``, or when longer than ``MAX_NAME_BYTES`` its start and a digest of the whole."""
    raw = name.encode()
    if len(raw) <= MAX_NAME_BYTES:
        return name
    head = raw[: MAX_NAME_BYTES - SHORT - 1].decode(errors="ignore")
    return f"{head}-{digest(name, SHORT)}"


def naming_items(overrides: Sequence[str], launch_dir: str) -> dict[str, str]:
    """The overrides that name a run, by key (``+``/``~`` stripped), each as its ``key=value`` item of the
    folder name, sorted by item: what tells a sweep's runs apart (W&B names them by it too)."""
    parsed = OverridesParser.create().parse_overrides([str(o) for o in overrides])
    items = {_key(o): _item(o, str(launch_dir)) for o in parsed if _key(o) not in EXCLUDED_KEYS}
    return dict(sorted(items.items(), key=lambda kv: kv[1]))


def run_folder_name(overrides: Sequence[str], launch_dir: str) -> str:
    """The folder name of a run with the command-line ``overrides`` launched from ``launch_dir``."""
    return _capped(",".join(naming_items(overrides, launch_dir).values()))


#: the resolver ``conf/config.yaml`` names run folders with, registered on import
RESOLVER = "tl.run_folder"
OmegaConf.register_new_resolver(RESOLVER, lambda overrides, launch_dir: run_folder_name(list(overrides), launch_dir), replace=True)
