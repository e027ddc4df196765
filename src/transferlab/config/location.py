"""Where the configs are, installed or in a checkout: ``conf/`` (the config groups), ``experiments/`` (the
studies: group ``experiment``) and ``sweeps/`` (group ``sweep``), three sibling folders.

A checkout keeps them at the top of the repository; the wheel carries the same three folders inside the
package (``transferlab/conf``, ``transferlab/experiments``, ``transferlab/sweeps``: ``setup.py`` copies them
into the build). ``$TRANSFERLAB_CONFIG_DIR`` points at another ``conf/`` (its siblings then hold the studies).
A researcher's own configs go beside these, not into them: ``--config-dir DIR`` or ``hydra.searchpath``.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

#: the config groups whose folders sit beside ``conf/`` (group -> folder). Their YAML files are the options;
#: sub-folders are not groups (``sweeps/wandb/`` holds W&B's sweep files, ``experiments/<name>/`` a study's report).
STUDY_GROUPS = {"experiment": "experiments", "sweep": "sweeps"}

#: a YAML file that only the checkout has: the wheel's configs are found by it inside the package
_MAIN_CONFIG = "config.yaml"


def config_root() -> Path:
    """The folder that holds ``conf/``, ``experiments/`` and ``sweeps/``: the installed package's own copy
    (a wheel), else the checkout this package was installed from (editable)."""
    package = Path(str(files("transferlab")))
    if (package / "conf" / _MAIN_CONFIG).is_file():
        return package
    return package.parents[1]  # <checkout>/src/transferlab -> <checkout>


def config_dir() -> Path:
    """The primary config folder: ``$TRANSFERLAB_CONFIG_DIR`` or ``conf/`` of ``config_root()``."""
    env = os.environ.get("TRANSFERLAB_CONFIG_DIR")
    return Path(env).resolve() if env else config_root() / "conf"


def study_folder(group: str, conf: Path | None = None) -> Path:
    """The folder of a study group (``experiment`` -> ``experiments/``) beside ``conf`` (default: ``config_dir()``)."""
    return (conf or config_dir()).parent / STUDY_GROUPS[group]
