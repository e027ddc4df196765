"""``transferlab-report``: aggregate per-run ``result.json`` files into a report.

Usage::

    transferlab-report DIR... [--out OUT] [--select-metric M] [--select-mode max|min]
                       [--wandb-project P] [--wandb-group G] [--no-wandb-mark]

Finds every ``result.json`` below the given folders; in each cell (combination, strategy, training-set
size, seed) selects the configuration (distinct ``hparams``) with the best validation metric
(``val/acc_best`` by default; lower wins for a loss; ties to the smaller LR); averages the selected runs
over seeds per (strategy, size); compares strategies paired on the draws they share at each seed (Welch's
t-test, with a note, where runs cannot be paired; no claim where no test can be made); answers, per size, which
strategy to use (the best, or the cheapest not significantly worse); and writes ``results.csv`` (every file, with ``selected``), ``report.md``,
``learning_curve.png`` and, when the runs vary in LR or freeze depth, ``sensitivity.png`` and
``freeze_depth.png`` into OUT (default: ``DIR/report`` for the first DIR). Failed or unreadable runs are
listed, running or interrupted ones as pending, never averaged in. Duplicate records of one
``config_hash`` count once (newest by file mtime wins). Each run's own W&B run then gets
``selected: true/false`` in its summary.

Modules: :mod:`.load` (the one scan of the folders), :mod:`.selection` (selection on validation per
cell), :mod:`.stats` (mean, std, Student-t interval), :mod:`.paired` (two strategies compared: paired t-test,
mean difference and P(A>B), or Welch's test), :mod:`.summary` (per combination × strategy × size),
:mod:`.variation` (the sources of variation the spread covers), :mod:`.views` (accuracy with the LR or the freeze depth held fixed), :mod:`.findings`
(claims, each with its test), :mod:`.recommend` (the answer per size and its cost), :mod:`.markdown`
(tables and ``report.md``), :mod:`.plot` (the figures), :mod:`.wandb_table` (the summary as a W&B table),
:mod:`.wandb_runs` (``selected`` in each run's W&B summary) and :mod:`.cli` (the command).
"""
