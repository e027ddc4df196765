"""Classification heads on pooled backbone features: linear or MLP."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from transferlab.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}


def check_head(hidden: Sequence[int], dropout: float, activation: str) -> None:
    """Raise ConfigError naming the bad ``head.*`` value and the fix."""
    if activation not in ACTIVATIONS:
        raise ConfigError(f"head.activation={activation!r} is unknown; choose one of {sorted(ACTIVATIONS)}.")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"head.dropout={dropout} must be in [0, 1). Fix: head.dropout=0.5, or 0 for none.")
    if any(int(h) <= 0 for h in hidden):
        raise ConfigError(f"head.hidden={list(hidden)} must list positive layer widths. Fix: head.hidden=[128].")


def build_head(
    in_features: int,
    num_classes: int,
    hidden: Sequence[int] = (),
    dropout: float = 0.0,
    activation: str = "relu",
) -> nn.Sequential:
    """``[Dropout] Linear`` when ``hidden`` is empty; else ``(Linear, act, Dropout)×len(hidden)`` then Linear."""
    check_head(hidden, dropout, activation)
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, int(h)), ACTIVATIONS[activation](), nn.Dropout(dropout)]
        width = int(h)
    if not hidden and dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
