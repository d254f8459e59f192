"""Stage 2, the network: the only place a spec becomes torch (``build``). Imports the architecture
stage and the base modules."""
