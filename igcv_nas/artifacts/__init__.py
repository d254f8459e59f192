"""Stage 5, artifacts: verified exports (``export``, with the fvcore cross-check ``crosscheck``),
the deployment form (``deploy``) and reports of a run directory (``report``). May import every
earlier stage."""
