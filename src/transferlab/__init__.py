"""transferlab: scratch vs. feature extraction vs. fine-tuning, measured."""

from omegaconf import OmegaConf

__version__ = "0.1.0"

# `${tl.or_else:${sweep_name},single}`: the value, or the default when it is null. (`oc.select` falls back
# only for a missing key, and yields None for a null one: folders named "None".) Registered here, with the
# package, so Hydra's launcher workers (submitit, joblib) have it before they resolve the output folders.
OmegaConf.register_new_resolver("tl.or_else", lambda value, default: default if value is None else value, replace=True)
