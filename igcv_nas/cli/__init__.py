"""Thin command-line front ends (``[project.scripts]``); each has ``main(argv=None) -> int``."""
