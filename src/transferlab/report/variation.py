"""Which sources of variation a combination's spread over seeds covers, read from its records: the draw of
training examples (``draw``), initialisation and data order (``seed``), the source model (``source_seed``)."""

from __future__ import annotations

import pandas as pd

from transferlab.record import DataSize
from transferlab.report.paired import PER_SEED, SeedResult

#: ``weights`` values of runs that start from no pretrained model
NO_WEIGHTS = ("none", "null", "random", "-")


def _runs(sub: pd.DataFrame) -> list[SeedResult]:
    return [r for runs in sub[PER_SEED] for r in runs]


#: whether a source of variation is in the spread: included, excluded (held fixed), or unknown from the records
IN, OUT, UNKNOWN = "in", "out", "unknown"


def _draws(sub: pd.DataFrame) -> tuple[str, str]:
    """Whether the draw of training examples varies between seeds, and the phrase that says where."""
    spread = sub[sub["n_runs"] >= 2]
    if any(r.draw is None for r in _runs(spread)):
        return UNKNOWN, "the draw of training examples (some records do not name their draw)"
    varies = [len({r.draw for r in runs}) > 1 for runs in spread[PER_SEED]]
    if not any(varies):
        return OUT, "the draw of training examples (every seed trained on the same examples)"
    if all(varies):
        return IN, "the draw of training examples (each seed its own subset)"
    sizes = zip(spread["size_kind"], spread["size"], varies)
    same = sorted({DataSize(kind, float(size)).describe() for kind, size, v in sizes if not v})
    return IN, (f"the draw of training examples (each seed its own subset, except at {', '.join(same)}, where "
                "every seed trained on the same examples, e.g. the whole training split)")


def _source(sub: pd.DataFrame) -> tuple[str | None, str]:
    """Whether the source model varies between seeds (None: the combination starts from no pretrained model)."""
    weights = str(sub["weights"].iloc[0])
    if weights in NO_WEIGHTS:
        return None, ""
    if weights != "source":
        return OUT, f"the pretrained weights (`{weights}`, the same for every run)"
    seeds = {r.source_seed for r in _runs(sub) if r.source_seed is not None}
    if not seeds:
        return UNKNOWN, "the source model's seed (the records do not name it)"
    if len(seeds) > 1:
        return IN, f"the source model's seed ({len(seeds)} source seeds)"
    return OUT, f"the source model's seed (every transfer run started from the model of source seed {seeds.pop()})"


def sources_of_variation(sub: pd.DataFrame) -> str:
    """One sentence for one combination's summary rows: what its spread over seeds includes, what it does not."""
    seeds = {r.seed for r in _runs(sub) if r.seed is not None}
    if len(seeds) < 2:
        return f"The spread covers no source of variation: {len(seeds)} seed, one run per strategy and size."
    found = [_draws(sub), (IN, f"initialisation and data order ({len(seeds)} seeds)"), _source(sub)]
    parts = {status: [phrase for s, phrase in found if s == status] for status in (IN, OUT, UNKNOWN)}
    text = f"The spread over seeds includes {'; '.join(parts[IN])}."
    text += f" It does not include {'; '.join(parts[OUT])}." if parts[OUT] else ""
    return text + (f" Unknown from the records: {'; '.join(parts[UNKNOWN])}." if parts[UNKNOWN] else "")
