"""transferlab's Hydra sweeper for tuning grids (``hydra/sweeper=transferlab_grid``)."""
