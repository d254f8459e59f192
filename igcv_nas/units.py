"""Parsing of human quantities (``300M``, ``0.3G``, ``3.5M``, ``300000000``; ``15ms``; ``2h``), the
LIMITS every input is checked against, and the bounded helpers that enforce them (reading a
file, quoting a value in a one-line error)."""
from __future__ import annotations

import math
import os
import re
import reprlib
import stat

from .errors import InputError

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_COUNT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)(?:[eE]([+-]?\d+))?\s*([kKmMgGtT]?)\s*$")


def parse_count(text: str, what: str = "value") -> int:
    """A positive integer count with an optional K/M/G/T suffix (powers of 1000).

    ``parse_count('300M') == 300_000_000``; ``'0.3G'`` and ``'300000000'`` give the same.

    Args:
        text: the count as written (``300M``, ``0.3G``, ``300000000``).
        what: how the message names the value (e.g. ``--flops``).

    Returns:
        The count as an int.

    Raises:
        InputError: (a ValueError) with a one-line message naming the value and what is
            accepted.
    """
    accepted = "a positive number with an optional K/M/G/T suffix, e.g. 300M, 0.3G, 300000000"
    m = _COUNT.match(str(text))
    if not m:
        raise InputError(f"{what} {text!r} is not a count; expected {accepted}")
    mant, exp, suf = m.groups()
    try:
        value = float(mant) * 10.0 ** int(exp or 0) * _SUFFIX[suf.upper()]
    except OverflowError:
        value = math.inf
    if not math.isfinite(value) or value > 1e18:
        raise InputError(f"{what} {text!r} is too large; expected {accepted} below 1e18")
    n = round(value)
    if n <= 0:
        raise InputError(f"{what} {text!r} must be positive; expected {accepted}")
    return n


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|min|h|d)?\s*$")
_SECONDS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds from ``'15ms'``, ``'90s'``, ``'30m'``, ``'2h'``, ``'1d'`` or a bare number of
    seconds.

    Args:
        text: the duration as written.
        what: how the message names the value (e.g. ``--time-budget``).

    Returns:
        The duration in seconds (positive and finite).

    Raises:
        InputError: (a ValueError) not a duration, or not positive and finite; one line."""
    m = _DURATION.match(str(text))
    if not m:
        raise InputError(f"{what} {text!r} is not a duration; expected a positive number with "
                         "an optional unit ms/s/m/h/d, e.g. 15ms, 2h")
    value = float(m.group(1)) * _SECONDS[m.group(2)]
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{what} {text!r} must be positive and finite")
    return value


# ---------------------------------------------------------------------------------------------
# LIMITS: the bounds every input is checked against, in one place.
#
# Each is far above any real network (the largest shipped or zoo value is given for scale) and
# low enough that no input can make loading, validating or costing use more than about 1 GB of
# memory or a few seconds before it is refused. A value above a limit is refused with a one-line
# SpecError / SpaceError / DataError naming the value and the limit.

# spec / export JSON file (igcv3_d 1.4 with explicit perms: ~0.2 MB)
MAX_SPEC_BYTES = 16 * 2**20
MAX_SPACE_BYTES = 1 * 2**20       # search-space YAML file (shipped: < 4 KB)
MAX_NESTING = 64                  # JSON / YAML nesting depth (a spec needs 8, an export ~10)
MAX_YAML_NODES = 200_000          # scalars + collections in one YAML document (shipped: < 1,000)
MAX_CHANNELS = 16_384             # any conv's channels, expansion, head (zoo at width 8: 15,360)
MAX_INPUT_SIZE = 8_192            # input resolution (ImageNet nets: 224..600)
MAX_CLASSES = 100_000             # classifier outputs (ImageNet-21k: 21,841)
MAX_KERNEL = 63                   # conv kernel size (large-kernel nets: 31)
MAX_STRIDE = 64                   # conv stride (real: 1..4)
MAX_BLOCKS = 1_024                # blocks in a network / deepest sample of a space (real: < 100)
MAX_STAGES = 64                   # stages of a search space (shipped: 7)
MAX_IGC_LAYERS = 64               # convs in one igc chain, L (shipped: <= 9)
MAX_ZOO_WIDTH = 8.0               # zoo width multiplier, e.g. igcv3_d_8 (published: <= 1.4)
MAX_SPACE_CHECKS = 10_000         # distinct local block combinations verified when a space loads
                                  # (shipped: <= 1,629; ~0.5 ms each)
MAX_SPACE_COMBINATIONS = 100_000  # local block choices, kernels included, the exact MACs bounds
                                  # enumerate (shipped: <= 3,258; ~40 us each)
MAX_CHECK_CELLS = 2**28           # path-matrix cells the exact complementary check of one block
                                  # may visit (real blocks: < 10**6; about 1 s at the limit)
MAX_IMAGE_PIXELS = 64 * 2**20     # pixels of one image-folder image (8192 x 8192), checked from
                                  # the header before decoding (decompression bombs)
MAX_BATCH_BYTES = 256 * 2**20     # one CIFAR batch file (CIFAR-100 train: 155 MB); unpickling
                                  # takes about 3x the file in memory


def show(value: object) -> str:
    """``repr(value)`` cut to a few dozen characters (lists, strings and huge integers
    shortened, nesting cut at 3 levels): what a one-line error message quotes of an input."""
    return _REPR.repr(value)


class _ShortRepr(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # repr() of a 5,000-digit int raises; never quote it whole
            return f"{'-' if x < 0 else ''}<integer of {x.bit_length():,} bits>"
        return repr(x)

    def repr_str(self, x: str, level: int) -> str:
        if len(x) <= self.maxstring:
            return super().repr_str(x, level)
        return repr(x[:self.maxstring]) + "..."


_REPR = _ShortRepr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 60, 60, 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdeque = 8
_REPR.maxdict = 6


def read_bounded(path: str | os.PathLike, limit: int, what: str,
                 error: type[Exception] = ValueError) -> bytes:
    """The bytes of the regular file ``path``, refused with ``error`` (one line: the path, why,
    what is accepted) when it cannot be opened, is not a regular file (a FIFO would block at open,
    ``/dev/zero`` never ends: opened non-blocking and refused from ``fstat``), or holds more than
    ``limit`` bytes (never read past ``limit + 1``)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise error(f"{path}: cannot read {what} ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode)
                    else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                    else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
            raise error(f"{path}: cannot read {what} (it is {kind}; accepted: a regular file)")
        too_big = error(f"{path}: {what} is larger than {limit:,} bytes; accepted: at most "
                        f"{limit:,} bytes")
        if st.st_size > limit:
            raise too_big
        chunks, n = [], 0
        while n <= limit:  # /proc-style files report size 0: the read itself is bounded
            try:
                b = os.read(fd, min(1 << 20, limit + 1 - n))
            except OSError as e:
                raise error(f"{path}: cannot read {what} ({e.strerror})") from None
            if not b:
                break
            chunks.append(b)
            n += len(b)
        if n > limit:
            raise too_big
        return b"".join(chunks)
    finally:
        os.close(fd)
