"""The config groups ``experiment`` and ``sweep`` from ``experiments/`` and ``sweeps/``, beside ``conf/``."""
