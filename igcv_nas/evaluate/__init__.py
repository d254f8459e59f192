"""Stage 3, evaluation (no Ray; Optuna only where ``latency_run`` samples a space): data sets
(``data``), the trainer (``train``), zero-cost scores (``zero_cost``), the proxy (``proxy``),
latency measurement and predictors (``latency``, ``latency_model``), ``igcv-latency`` as calls
(``latency_run``) and a final training into an output directory (``training_run``). Knows nothing
of the search. Imports the network and architecture stages and the base modules."""
