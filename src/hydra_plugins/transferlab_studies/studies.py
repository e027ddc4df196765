"""``experiment=NAME`` and ``sweep=NAME`` read ``experiments/NAME.yaml`` and ``sweeps/NAME.yaml``, the folders
beside ``conf/`` (in a checkout, at the top of the repository; in the wheel, inside the package).

Hydra names a config group by its folder, and these folders are named for people (plural, at the top, with a
study's report beside its YAML), so a config source maps group to folder: ``StudyConfigSource`` (scheme
``transferlab://``), put on the search path after the primary config folder by ``StudySearchPath``, and only
for transferlab's own config (another Hydra app in the same environment is left alone). Only the folder's YAML
files are options: ``sweeps/wandb/`` (W&B's sweep files) and ``experiments/<name>/`` (a study's report) are not
groups. Both classes are Hydra's public plugin types (``hydra.plugins``), found in the ``hydra_plugins`` package.
"""

from pathlib import Path
from typing import List, Optional

from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

from transferlab.config.location import STUDY_GROUPS, config_dir

SCHEME = "transferlab"


class StudyConfigSource(ConfigSource):
    """The groups of ``STUDY_GROUPS`` under the folder ``self.path`` (the one holding ``conf/``)."""

    @staticmethod
    def scheme() -> str:
        return SCHEME

    def _parts(self, config_path: str) -> List[str]:
        return [p for p in config_path.split("/") if p]

    def _folder(self, group: str) -> Optional[Path]:
        folder = STUDY_GROUPS.get(group)
        return Path(self.path, folder) if folder and Path(self.path, folder).is_dir() else None

    def _file(self, config_path: str) -> Optional[Path]:
        parts = self._parts(self._normalize_file_name(config_path))
        folder = self._folder(parts[0]) if len(parts) == 2 else None
        return folder / parts[1] if folder is not None and (folder / parts[1]).is_file() else None

    def available(self) -> bool:
        return any(self._folder(group) for group in STUDY_GROUPS)

    def is_group(self, config_path: str) -> bool:
        parts = self._parts(config_path)
        return not parts or (len(parts) == 1 and self._folder(parts[0]) is not None)

    def is_config(self, config_path: str) -> bool:
        return self._file(config_path) is not None

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> List[str]:
        parts = self._parts(config_path)
        if not parts and results_filter in (None, ObjectType.GROUP):
            return sorted(group for group in STUDY_GROUPS if self._folder(group))
        folder = self._folder(parts[0]) if len(parts) == 1 else None
        if folder is None or results_filter not in (None, ObjectType.CONFIG):
            return []
        return sorted(f.stem for f in folder.glob("*.yaml") if f.is_file())

    def load_config(self, config_path: str) -> ConfigResult:
        file = self._file(config_path)
        if file is None:
            raise ConfigLoadError(f"Config not found: {config_path} under {self.path}")
        text = file.read_text(encoding="utf-8")
        return ConfigResult(config=OmegaConf.load(file), path=self.full_path(), provider=self.provider,
                            header=self._get_header_dict(text[:512]))


def _plain(path: str) -> str:
    return path.split("://", 1)[1] if "://" in path else path


class StudySearchPath(SearchPathPlugin):
    """Puts ``transferlab://<folder of conf/>`` on the search path, right after transferlab's ``conf/``."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        conf = config_dir()
        for element in search_path.get_path():
            if element.path and Path(_plain(element.path)).resolve() == conf.resolve() and element.provider != SCHEME:
                anchor = SearchPathQuery(provider=element.provider, path=element.path)
                search_path.append(provider=SCHEME, path=f"{SCHEME}://{conf.parent}", anchor=anchor)
                return
