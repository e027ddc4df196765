#!/usr/bin/env python
"""Where a LoRA run's training steps go: cProfile of one ``strategy=lora`` fit, split into the time inside peft's
LoRA layers and peft's own Python.

    OMP_NUM_THREADS=1 python benchmarks/profile_lora.py                     # digits_transfer, 1,259 examples, rank 4
    OMP_NUM_THREADS=1 python benchmarks/profile_lora.py strategy.rank=16    # any override of the run

Times are this process's CPU time (one thread: OMP_NUM_THREADS=1), so other processes on the cores do not
count. Prints, over the optimizer steps (Lightning's ``optimizer_step``: forward, backward, AdamW):
- ``in peft layers``: cumulative time of the forward of peft's LoRA layers (their base layer, the adapters, the
  wrapper code). cProfile sees Python frames only: the backward runs in autograd's C++ engine and is not split.
- ``peft's own code``: time spent in functions of the peft package itself (the wrappers' Python, not the convs).
- the forward of the adapted backbone against the same backbone merged (no wrappers), eval mode, no grad.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from transferlab.model.adapters import merged_copy
from transferlab.run.lifecycle import build_run
from transferlab.run.trainer import make_trainer

ROOT = Path(__file__).resolve().parents[1]
RUN = ["experiment=digits_transfer", "budget=by_size", "strategy=lora", "strategy.rank=4", "optimizer.lr=0.003",
       "dataset.fraction=1.0", "seed=0", "logger=none", "trainer.enable_progress_bar=false", "max_validations=1"]


def _cumulative(stats: pstats.Stats, path_part: str, function: str) -> tuple[float, int]:
    """Cumulative seconds and calls of the functions named ``function`` in files whose path holds ``path_part``."""
    found = [(v[3], v[1]) for (file, _, name), v in stats.stats.items() if path_part in file and name == function]  # type: ignore[attr-defined]
    return sum(t for t, _ in found), sum(n for _, n in found)


def _forward_ms(backbone: torch.nn.Module, x: torch.Tensor, repeats: int = 30) -> float:
    backbone.eval()
    with torch.no_grad():
        backbone(x)
        start = time.process_time()
        for _ in range(repeats):
            backbone(x)
    return (time.process_time() - start) / repeats * 1e3


def main(overrides: list[str]) -> None:
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("config", overrides=[*RUN, *overrides])
    run = build_run(cfg)
    trainer = make_trainer(cfg, Path("/tmp/profile_lora"), [run.policy], None, run.n_train, checkpoints=False)
    profiler = cProfile.Profile(time.process_time)  # CPU time: other processes on the cores do not count
    start = time.process_time()
    profiler.runcall(trainer.fit, run.module, datamodule=run.datamodule)
    wall = time.process_time() - start
    stats = pstats.Stats(profiler)
    steps_s, steps = _cumulative(stats, "pytorch_lightning/core/module.py", "optimizer_step")
    peft_s, calls = _cumulative(stats, "peft/tuners/lora/layer.py", "forward")
    own = sum(v[2] for (file, _, _), v in stats.stats.items() if "/peft/" in file)  # type: ignore[attr-defined]
    print(f"fit {wall:.1f} CPU s (profiled), {steps} optimizer steps: {steps_s:.1f} s, {steps_s / max(1, steps) * 1e3:.1f} ms a step")
    print(f"in peft layers (forward, cumulative): {peft_s:.2f} s = {peft_s / steps_s:.1%} of the steps ({calls} layer calls)")
    print(f"peft's own code (tottime in peft files): {own:.2f} s = {own / steps_s:.1%} of the steps")
    x = torch.randn(int(cfg.dataset.batch_size), 3, int(cfg.dataset.input_size), int(cfg.dataset.input_size))
    adapted, merged = _forward_ms(run.module.backbone, x), _forward_ms(merged_copy(run.module.backbone), x)
    print(f"forward of a batch of {len(x)}: adapted {adapted:.1f} ms, merged (no wrappers) {merged:.1f} ms: "
          f"the wrappers and adapters add {adapted / merged - 1:.0%}")


if __name__ == "__main__":
    main(sys.argv[1:])
