"""The wheel carries the configs: ``conf/``, the studies (``experiments/*.yaml``) and the sweeps (``sweeps/*.yaml``)
are copied into ``transferlab/conf``, ``transferlab/experiments`` and ``transferlab/sweeps`` of the build, where
``transferlab.config.location`` finds them. The checkout keeps them at the top of the repository; an editable
install reads them there, so nothing is copied for it. Everything else is in pyproject.toml."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

#: folder at the top of the checkout -> the YAML files of it the wheel carries (sweeps/wandb/ is W&B's, not Hydra's)
CONFIG_FILES = {"conf": "**/*.yaml", "experiments": "*.yaml", "sweeps": "*.yaml"}


class BuildWithConfigs(build_py):
    """setuptools' build_py, then the config folders into the package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for folder, pattern in CONFIG_FILES.items():
            for source in sorted(Path(folder).glob(pattern)):
                target = Path(self.build_lib, "transferlab", source)
                self.mkpath(str(target.parent))
                self.copy_file(str(source), str(target))


setup(cmdclass={"build_py": BuildWithConfigs})
