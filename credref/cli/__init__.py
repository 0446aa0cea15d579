"""The ``credref`` command line (:mod:`credref.cli.app`). Settings come from ``CREDREF_*``
environment variables and ``credref.toml`` (:mod:`settings`).

Commands import the light layers (records, features, the online store, keys, audit) at the
top of their module; the heavy ones (MLflow, LightGBM, BentoML, Spark, the synthetic
domain) inside the command that needs them, so ``credref --help`` and the daily commands
do not pay seconds for what they never use."""
