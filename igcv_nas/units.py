"""Parsing of human quantities: ``300M``, ``0.3G``, ``3.5M``, ``300000000``; ``15ms``; ``2h``."""
from __future__ import annotations

import math
import re

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_COUNT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)(?:[eE]([+-]?\d+))?\s*([kKmMgGtT]?)\s*$")


def parse_count(text: str, what: str = "value") -> int:
    """A positive integer count with an optional K/M/G/T suffix (powers of 1000).

    ``parse_count('300M') == 300_000_000``; ``'0.3G'`` and ``'300000000'`` give the same.
    Raises ValueError with a one-line message naming the value and what is accepted.
    """
    accepted = "a positive number with an optional K/M/G/T suffix, e.g. 300M, 0.3G, 300000000"
    m = _COUNT.match(str(text))
    if not m:
        raise ValueError(f"{what} {text!r} is not a count; expected {accepted}")
    mant, exp, suf = m.groups()
    try:
        value = float(mant) * 10.0 ** int(exp or 0) * _SUFFIX[suf.upper()]
    except OverflowError:
        value = math.inf
    if not math.isfinite(value) or value > 1e18:
        raise ValueError(f"{what} {text!r} is too large; expected {accepted} below 1e18")
    n = round(value)
    if n <= 0:
        raise ValueError(f"{what} {text!r} must be positive; expected {accepted}")
    return n


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|min|h|d)?\s*$")
_SECONDS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds from ``'15ms'``, ``'90s'``, ``'30m'``, ``'2h'``, ``'1d'`` or a bare number of seconds."""
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"{what} {text!r} is not a duration; expected a positive number with "
                         "an optional unit ms/s/m/h/d, e.g. 15ms, 2h")
    value = float(m.group(1)) * _SECONDS[m.group(2)]
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} {text!r} must be positive and finite")
    return value
