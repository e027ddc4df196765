"""User-facing errors: each says what is wrong and how to fix it."""

from __future__ import annotations

import os

#: environment variables that ask the commands for tracebacks instead of one-line messages (Hydra's own too)
DEBUG_FLAGS = ("TRANSFERLAB_DEBUG", "HYDRA_FULL_ERROR")


def debugging() -> bool:
    """Whether a debug flag (``TRANSFERLAB_DEBUG=1``, ``HYDRA_FULL_ERROR=1``) asks for tracebacks."""
    return any(os.environ.get(flag, "") not in ("", "0") for flag in DEBUG_FLAGS)


class TransferlabError(Exception):
    """Base class for errors caused by the user's input (config, files, data).

    The message names the problem and the fix; the CLI prints it without a traceback.
    """


class ConfigError(TransferlabError, ValueError):
    """A config value is invalid."""


class DataError(TransferlabError, ValueError):
    """The dataset (files, labels, splits) is unusable as configured."""


class WeightsError(TransferlabError, ValueError):
    """Pretrained weights or a checkpoint cannot be loaded."""


class TrainingDiverged(TransferlabError, RuntimeError):
    """The loss became NaN or infinite."""
