"""Where C stops reading a number: ``strtol`` and ``PyOS_string_to_double`` as C pickle calls them.

C pickle parses protocol 0's text opcodes with the C library, not with ``int()`` and
``float()``: ``INT`` with ``strtol(line, &end, 0)`` (``010`` is octal 8, ``0x10`` is 16, a prefix
is read and the rest must be the line's end), ``FLOAT`` with ``PyOS_string_to_double`` (no spaces,
no underscores, the longest prefix that is a float). These pure functions of the bytes say what
those calls read; ``_pickle`` decides what the opcode then pushes.
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["double_end", "strtol"]

# C's `long` (strtol's range, in INT): 8 bytes on Linux and macOS, 4 on Windows.
_C_LONG_BITS: Final = struct.calcsize("l") * 8
# Bytes C's isspace() skips (the C locale), as strtol and PyLong_FromString do.
_C_SPACE: Final = b" \t\n\v\f\r"
_DIGITS: Final = {8: b"01234567", 10: b"0123456789", 16: b"0123456789abcdefABCDEF"}


def strtol(line: bytes) -> tuple[int | None, int]:
    """C's strtol(line, &end, 0): the value (None on overflow) and where it stopped."""
    size = len(line)
    i = 0
    while i < size and line[i] in _C_SPACE:
        i += 1
    negative = False
    if i < size and line[i] in b"+-":
        negative = line[i] == 45  # "-"
        i += 1
    base = 10
    if i < size and line[i] == 48:  # "0": octal, or hex if "0x" and a hex digit follow
        base = 8
        if i + 2 < size and line[i + 1] in b"xX" and line[i + 2] in _DIGITS[16]:
            base = 16
            i += 2
    digits = _DIGITS[base]
    first = i
    while i < size and line[i] in digits:
        i += 1
    if i == first:  # no number: strtol stops at the very start
        return 0, 0
    value = int(line[first:i], base)
    value = -value if negative else value
    bound = 1 << (_C_LONG_BITS - 1)
    return (value if -bound <= value < bound else None), i


def double_end(line: bytes) -> int:
    """Where PyOS_string_to_double stops reading ``line`` (0: no float at all).

    It reads a sign, then inf, infinity or nan in any case, or decimal digits with one point and
    an exponent: no spaces and no underscores (float() allows both), the longest prefix.
    """
    size = len(line)
    i = 1 if line[:1] in (b"+", b"-") else 0
    word = line[i : i + 8].lower()
    if word == b"infinity":
        return i + 8
    if word[:3] in (b"inf", b"nan"):
        return i + 3
    digits = _DIGITS[10]
    first = i
    while i < size and line[i] in digits:
        i += 1
    count = i - first
    if i < size and line[i] == 46:  # "."
        i += 1
        fraction = i
        while i < size and line[i] in digits:
            i += 1
        count += i - fraction
    if not count:
        return 0
    if i < size and line[i] in b"eE":  # an exponent, if digits follow
        j = i + 2 if i + 1 < size and line[i + 1] in b"+-" else i + 1
        exponent = j
        while j < size and line[j] in digits:
            j += 1
        if j > exponent:
            i = j
    return i
