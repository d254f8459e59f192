"""Stage 4, the search: the trial book (``trials``, no Ray), the samplers (``evolution``, ``nsga``),
the settings and the budget rules (``settings``), the engine (``engine``, no Ray), preparing and
running a search (``session``), the Ray Tune adapter (``raytune``), the run directory
(``runstore``), the live display (``progress``) and the one place private Optuna API is used
(``compat``). Does not know how a block is built: it reaches the network only through the evaluation
stage."""
