"""Stage 1, the architecture (no torch, Optuna or Ray): the block kinds and their registry, what a
network is (``spec``, ``perm``), whether it is valid and complementary (``validation``), what it
costs (``cost``), the reference networks (``zoo``), YAML search spaces (``space``), reading a spec
named by a caller (``sources``) and the per-row report of ``igcv-inspect`` (``inspection``).
Imports only the base modules (``igcv_nas.errors``, ``units``, ``fileio``)."""
