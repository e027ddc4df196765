"""One run's life: ``lifecycle`` (skip, resume, record) → ``source`` (the source-task weights) →
``assembly`` (config → policy, data, model) → ``trainer`` (the Lightning Trainer), with ``checkpoints``,
``distributed`` (DDP special cases) and ``context`` (where Hydra put the run)."""
