"""transferlab's SLURM launcher for Hydra: hydra-submitit-launcher's, with its resources derived from the
trainer and its input checked before anything is submitted (``conf/hydra/launcher/slurm.yaml``)."""
