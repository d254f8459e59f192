"""igcv-nas: neural architecture search over interleaved structured-sparse convolutions.

Data flows one way: spec -> validate -> cost -> build -> evaluate -> search -> run store -> export.
"""
from __future__ import annotations

from .arch.cost import Cost, count
from .arch.spec import NetworkSpec, SpecError, from_dict, from_json, load
from .arch.validation import Report, ValidationError, check, validate

__version__ = "0.1.0"
__all__ = ["Cost", "NetworkSpec", "Report", "SpecError", "ValidationError", "check", "count",
           "from_dict", "from_json", "load", "validate", "__version__"]
