"""transferlab: scratch vs. feature extraction vs. fine-tuning, measured."""

__version__ = "0.1.0"
