"""The run's config, typed: a schema per config group, checked when a run starts.

``schema.check_config(cfg)`` reads the composed config into ``schema.RunConfig``: one dataclass per group
(``backbone``, ``head``, ``optimizer``, ``trainer``, ``budget``, ``logger``, ``paths``, ``source``, the top-level
keys), the dataset's by ``dataset.kind`` (``datasets``), a strategy's from its policy class's ``__init__``
signature (``strategies.registry.policy_arguments``). ``train(cfg)`` calls it before any file is written;
``run.assembly.plan_run`` hands the typed groups to the model (``TransferModule(backbone, choices, head,
optimizer)``), so an option is one field in one dataclass plus its default in ``conf/<group>/*.yaml``.

Why not Hydra structured configs (dataclasses in the ConfigStore as each group's base, the ``defaults``
schema pattern of Hydra's docs)? Tried against this project's configs, a check at the start of the run
serves users better:

- **Messages.** A structured config fails inside Hydra's composition with OmegaConf's text (``Value 'abc' of
  type 'str' could not be converted to Float … full_key: optimizer.lr, object_type=OptimizerConfig``), which
  the app cannot reword; here each message is the project's one line: the key, what is wrong, then the fix,
  with the close names of a mistyped key or option (``typed``).
- **Sweeps.** Hydra composes each job of a multirun as it launches it, so a schema error in one job's values
  stops the whole sweep there; checked in the run, that job fails alone (its command prints why) and the sweep
  goes on.
- **The shapes of these groups.** Five dataset kinds with different keys, strategies whose keys are their
  classes' arguments (a class of the user's own by ``strategy._target_``), a ``trainer`` that takes any
  Lightning argument, and unions such as ``num_workers: auto | 4`` that OmegaConf 2.3 cannot type.
- **One check for every caller**: the command line, ``train(cfg)`` from Python, the source task's derived
  config, and a module rebuilt from a checkpoint's hyperparameters (stored as plain dicts, loaded with
  ``weights_only=True``).

lightning-hydra-template keeps plain YAML and instantiates ``_target_`` classes: a wrong type surfaces when
the object is built, mid-run. Here the types sit next to the keys, as in Hydra's pattern, and are checked
before anything runs.

The rules: a group's keys are closed (an unknown key is an error naming the close one: a typo in a sweep fails
before its runs are spent); free-form options are the mapping fields (``backbone.kwargs``,
``optimizer.kwargs``, ``dataset.augment``, ``dataset.mixup``), ``trainer``'s Lightning arguments, and top-level
annotations (``+extra.note=…``; only a key close to a known one is refused there). A quoted number, ``yes``/
``no`` for a flag or an integral float for an integer are converted and written back into the config, so
the hash and every reader see the typed value; the hash of a config written with plain values is unchanged.
"""
