"""LoRA adapters in a timm backbone, through Hugging Face ``peft``'s public API.

- ``LoraSpec``: rank, alpha, dropout and the target modules (``strategy=lora`` builds it; the module's
  ``RunChoices`` carries it, so a checkpoint's hyperparameters rebuild the adapted model).
- ``target_names``: the modules that get an adapter: the named ones (a name matches a module equal to it or
  ending in ``.name``, peft's rule) or the backbone family's default (``DEFAULT_TARGETS``); a name that matches
  nothing is a ConfigError that lists the backbone's candidates.
- ``add_lora``: ``peft.inject_adapter_in_model`` (in place: parameter names keep the backbone's, so timm's
  ``group_matcher`` still groups them by block) and ``adapter_parameter_names``: what trains.
- ``merged_copy``: a copy with every adapter merged into its base layer (``BaseTunerLayer.merge``) and the
  wrappers replaced by their base layers: a plain timm backbone, for ``best.pt``.

Only ``nn.Linear`` and ungrouped ``nn.Conv2d`` are candidates: peft cannot merge LoRA into a grouped
(depthwise) convolution ("Merging is not supported for _ConvNd layers with groups > 1", peft 0.21), and an
adapter that cannot be merged could not be exported as a plain timm state dict.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from transferlab.errors import ConfigError

#: per timm model class, the modules the default LoRA adapts (a full match of the module name). ViT: the
#: blocks' fused qkv, attention projection and MLP (as in the LoRA-for-ViT baselines of VTAB-1k / V-PETL), not
#: patch_embed.proj; CNNs: the convolutions of their stages, not the stem. Any other model: every candidate.
DEFAULT_TARGETS: dict[str, str] = {
    "VisionTransformer": r"blocks\.\d+\.(attn\.(qkv|proj)|mlp\.fc[12])",
    "ResNet": r"layer\d+\..+",
    "EfficientNet": r"blocks\..+",
    "ConvNeXt": r"stages\.\d+\.blocks\.\d+\.mlp\.fc[12]",
}


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA adapter for every target module: ``rank`` (peft's ``r``), ``alpha`` (``lora_alpha``; None: the
    rank, so the adapters' scale alpha / rank is 1), ``dropout`` (``lora_dropout``) and ``target_modules``
    (None: the family default)."""

    rank: int = 8
    alpha: float | None = None
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None


def adaptable(module: nn.Module) -> bool:
    """Whether peft can add a LoRA adapter to ``module`` and merge it back (Linear, ungrouped Conv2d)."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)


def short_name(name: str) -> str:
    """A module name without its block path: ``blocks.3.attn.qkv`` → ``attn.qkv``, ``layer2.0.downsample.0`` →
    ``downsample.0``, ``conv1`` → ``conv1`` (what follows the last numeric part that is not the last part)."""
    parts = name.split(".")
    numeric = [i for i, part in enumerate(parts[:-1]) if part.isdigit()]
    return ".".join(parts[numeric[-1] + 1 :]) if numeric else name


def target_names(backbone: nn.Module, targets: Sequence[str] | None, model_name: str) -> list[str]:
    """The full names of the modules to adapt (see the module doc); ConfigError for a name that matches none."""
    found = [name for name, module in backbone.named_modules() if adaptable(module)]
    if targets is None:
        pattern = DEFAULT_TARGETS.get(type(backbone).__name__)
        chosen = [n for n in found if pattern is None or re.fullmatch(pattern, n)]
        if not chosen:
            raise ConfigError(f"strategy=lora: {model_name} has no Linear or ungrouped Conv2d module to adapt. "
                              "Fix: use another strategy (e.g. strategy=bitfit) for this backbone.")
        return chosen
    if not targets:
        raise ConfigError("strategy.target_modules=[] adapts nothing. Fix: strategy.target_modules=null (the family default).")
    chosen = []
    for target in targets:
        hits = [n for n in found if n == target or n.endswith("." + str(target))]
        if not hits:
            raise _unknown_target(str(target), found, model_name)
        chosen += [n for n in hits if n not in chosen]
    return chosen


def _unknown_target(target: str, found: list[str], model_name: str) -> ConfigError:
    candidates = list(dict.fromkeys(short_name(n) for n in found))
    close = difflib.get_close_matches(target, candidates, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return ConfigError(
        f"strategy.target_modules: {target!r} names no Linear or ungrouped Conv2d module of {model_name}.{hint} "
        f"Fix: choose among its candidates {', '.join(candidates)}, or strategy.target_modules=null (the family default)."
    )


def add_lora(backbone: nn.Module, spec: LoraSpec, model_name: str) -> nn.Module:
    """Inject ``spec``'s adapters into ``backbone`` in place (peft ``inject_adapter_in_model``); returns it.

    The adapters draw their initialisation (A random, B zero: the adapted model starts as the backbone) from a
    fork of the random state, so the run's own random stream (the head's initialisation, the data order) is the
    same as without them.
    """
    names = target_names(backbone, spec.target_modules, model_name)
    config = LoraConfig(
        r=int(spec.rank),
        lora_alpha=float(spec.alpha if spec.alpha is not None else spec.rank),
        lora_dropout=float(spec.dropout),
        target_modules="|".join(re.escape(n) for n in names),  # a string is a full-match regex: exactly these modules
    )
    with torch.random.fork_rng(devices=[]):
        inject_adapter_in_model(config, backbone)
    adapted = [name for name, module in backbone.named_modules() if isinstance(module, BaseTunerLayer)]
    assert sorted(adapted) == sorted(names), f"peft adapted {adapted[:5]}…, not the {len(names)} modules asked for"
    return backbone


def adapter_parameter_names(backbone: nn.Module, prefix: str = "") -> set[str]:
    """The names (``prefix`` + name) of the adapters' own parameters: every parameter of a peft layer but its
    base layer's."""
    names: set[str] = set()
    for name, module in backbone.named_modules():
        if isinstance(module, BaseTunerLayer):
            base = {id(p) for p in module.get_base_layer().parameters()}
            names.update(f"{prefix}{name}.{n}" for n, p in module.named_parameters() if id(p) not in base)
    return names


def merged_copy(backbone: nn.Module) -> nn.Module:
    """A deep copy of ``backbone`` with every adapter merged into its base layer and each peft layer replaced by
    that base layer: the architecture (and state-dict keys) of the plain timm backbone."""
    merged = copy.deepcopy(backbone)
    layers = [(name, module) for name, module in merged.named_modules() if isinstance(module, BaseTunerLayer)]
    for name, layer in layers:
        layer.merge(safe_merge=True)  # safe: a NaN in the merged weights is an error, not a silent export
        parent, _, child = name.rpartition(".")
        setattr(merged.get_submodule(parent), child, layer.get_base_layer())
    return merged
