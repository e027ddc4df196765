"""transferlab's Optuna sweeper for Hydra: one study in a storage that many sweeper processes (or SLURM
jobs) share, continued to ``n_trials`` when re-run, each trial run once (``conf/hydra/sweeper/optuna_study.yaml``)."""
