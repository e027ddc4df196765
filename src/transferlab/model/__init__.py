"""The model: ``backbone`` (timm models, weights, blocks, preprocessing), ``heads``, ``optim`` (parameter
groups and LR schedules) and ``module`` (the LightningModule that puts them together)."""
