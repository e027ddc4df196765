"""``transferlab-report``: aggregate per-run ``result.json`` files into a report.

Usage::

    transferlab-report DIR... [--out OUT] [--wandb-project P] [--wandb-group G]

Finds every ``result.json`` below the given folders, averages completed runs over seeds per
(strategy, training-set size), and writes ``results.csv``, ``report.md`` and ``learning_curve.png``
into OUT (default: ``DIR/report`` for the first DIR). Failed, interrupted or unreadable runs are
listed, never averaged in. Duplicate records of one ``config_hash`` count once (newest by file
mtime wins).

Modules: :mod:`.load` (the one scan of the folders), :mod:`.stats` (mean, std, Student-t
interval), :mod:`.summary` (per combination × strategy × size), :mod:`.findings` (plain-language
findings), :mod:`.markdown` (tables and ``report.md``), :mod:`.plot` (``learning_curve.png``),
:mod:`.wandb_table` (the summary as a W&B table) and :mod:`.cli` (the command).
"""
