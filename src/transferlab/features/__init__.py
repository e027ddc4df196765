"""Pre-computed bottleneck features: run the frozen backbone once, train heads on them many times.

``cache`` extracts and stores them (safetensors keyed by everything that changes them); ``datamodules``
trains on them. Import the modules themselves: this package re-exports nothing.
"""
