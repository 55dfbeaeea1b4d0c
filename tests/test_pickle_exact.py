"""The protocol-0 text opcodes read exactly as C pickle reads them.

Each generated pickle holds one text opcode (``INT``, ``LONG``, ``FLOAT``, ``STRING``,
``UNICODE``, ``PUT``/``GET``, ``GLOBAL``) whose line is built from fragments that sit on the
edges of C's parsers: leading zeros, signs, spaces, underscores, an ``L`` suffix, hex, octal and
binary prefixes, NUL bytes, exponents, ``inf``/``nan``, quotes and escapes. The machine must give
what ``pickle.loads`` (the C unpickler, with torch.load's ``encoding="utf-8"``) gives, value and
type, and a ``ReadError`` wherever C raises. ``CKPTKEYS_EXACT_EXAMPLES`` sets how many examples
run (development: 20000; CI: the default, a few seconds).
"""

from __future__ import annotations

import io
import math
import os
import pickle
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckptkeys import ReadError
from ckptkeys._read._globalref import GlobalRef
from ckptkeys._read._pickle import unpickle

EXAMPLES = int(os.environ.get("CKPTKEYS_EXACT_EXAMPLES", "400"))

_INT_FRAGMENTS = ["", "0", "00", "1", "7", "8", "9", "+", "-", " ", "\t", "\x0b", "\x00", "_", "L", "l", "0x", "0X",
                  "0o", "0O", "0b", "0B", "a", "f", "F", "g", "x", "9223372036854775807", "9223372036854775808",
                  "18446744073709551616", "2147483648", "e", ".", "\xff", "\x1c"]  # fmt: skip
_FLOAT_FRAGMENTS = ["", "0", "1", "5", "9", ".", "e", "E", "+", "-", " ", "_", "\x00", "inf", "INF", "infinity",
                    "nan", "NaN", "infinit", "x", "0x", "p", "1e308", "1e309", "e-400", "9" * 20, "\t"]  # fmt: skip
_STRING_FRAGMENTS = ["a", "'", '"', "\\", "\\x", "\\x4", "\\x41", "\\n", "\\'", "\\0", "\\777", "\\u00e9", "\\q",
                     "\xc3\xa9", "\xc3", "\xff", "\x00", " "]  # fmt: skip
_UNICODE_FRAGMENTS = ["a", "\\", "\\u", "\\u00e9", "\\u12", "\\U0001F600", "\\U00110000", "\\ud800", "\\n", "\xe9",
                      "\x00", " ", "u"]  # fmt: skip


def _line(fragments: list[str], digits: int = 25, pieces: int = 6) -> st.SearchStrategy[bytes]:
    piece = st.one_of(st.sampled_from(fragments), st.text(alphabet="0123456789", max_size=digits))
    return st.lists(piece, max_size=pieces).map(lambda parts: "".join(parts).encode("latin-1"))


_INDEX_FRAGMENTS = ["", "0", "00", "1", "3", "+", "-", " ", "\t", "\x00", "_", "L", "0x", "a"]


@st.composite
def text_pickles(draw: st.DrawFn) -> bytes:
    """One pickle: an optional PROTO, one text opcode (or a PUT and a GET), STOP."""
    head = draw(st.sampled_from([b"", b"\x80\x02"]))
    kind = draw(st.sampled_from(["I", "L", "F", "S", "V", "memo", "c"]))
    if kind in "IL":
        body = kind.encode() + draw(_line(_INT_FRAGMENTS)) + b"\n"
    elif kind == "F":
        body = b"F" + draw(_line(_FLOAT_FRAGMENTS)) + b"\n"
    elif kind == "S":
        quote = draw(st.sampled_from(["'", '"', ""]))
        inner = draw(st.lists(st.sampled_from(_STRING_FRAGMENTS), max_size=6))
        body = b"S" + (quote + "".join(inner) + draw(st.sampled_from([quote, "'", '"']))).encode("latin-1") + b"\n"
    elif kind == "V":
        body = b"V" + "".join(draw(st.lists(st.sampled_from(_UNICODE_FRAGMENTS), max_size=6))).encode("latin-1") + b"\n"
    elif kind == "c":
        names = st.lists(st.sampled_from(["os", "a", ".", "\xc3\xa9", "\xff", "\x00", " ", "é"]), max_size=3)
        module, name = ("".join(draw(names)).encode("utf-8", "surrogateescape") for _ in range(2))
        body = b"c" + module + b"\n" + name + b"\n"
    else:  # indices under 10**6 only: C's memo is an array as long as the largest index
        put = draw(_line(_INDEX_FRAGMENTS, digits=1, pieces=3))
        get = draw(st.one_of(st.just(put), _line(_INDEX_FRAGMENTS, digits=1, pieces=3)))
        body = b"K\x07p" + put + b"\n0g" + get + b"\n"
    return head + body + b"."


class _Recording(pickle.Unpickler):
    """C pickle, with each global recorded instead of imported."""

    def find_class(self, module: str, name: str) -> Any:
        return ("global", module, name)


def _c_pickle(data: bytes) -> Any:
    return _Recording(io.BytesIO(data), encoding="utf-8").load()


def _recorded(ref: GlobalRef) -> tuple[str, str, str]:
    return ("global", ref.module, ref.name)


def _same(ours: Any, theirs: Any) -> bool:
    if isinstance(ours, GlobalRef):
        ours = _recorded(ours)
    if type(ours) is not type(theirs):
        return False
    if isinstance(ours, float):  # bit for bit: -0.0 and 0.0 differ, nan equals nan
        return struct.pack(">d", ours) == struct.pack(">d", theirs) or (math.isnan(ours) and math.isnan(theirs))
    return bool(ours == theirs)


def _check(data: bytes) -> None:
    try:
        expected = _c_pickle(data)
    except Exception:  # C pickle stops here: so must the machine
        with pytest.raises(ReadError):
            unpickle(data, find_class=lambda module, name, protocol: GlobalRef(module, name))
        return
    got = unpickle(data, find_class=lambda module, name, protocol: GlobalRef(module, name)).value
    assert _same(got, expected), (data, got, expected)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # invalid escapes warn, in C as in codecs
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text_pickles())
def test_text_opcodes_as_c_pickle(data: bytes) -> None:
    _check(data)


@pytest.mark.parametrize(
    "data",
    [
        b"I010\n.",  # strtol base 0: octal 8 (int("010") would say 10)
        b"I01\n.",  # True
        b"I00\n.",  # False
        b"I 1\n.",  # two bytes reading 1: True
        b"I+0\n.",
        b"I1\x00\n.",  # C stops at the NUL: True
        b"I\x00\n.",  # no digits, but strtol's end is a NUL: 0
        b"I0x1f\n.",
        b"I-0x10\n.",
        b"I0x\n.",  # "0" then "x": PyLong_FromString refuses
        b"I08\n.",  # not octal, and base 0 refuses a leading zero
        b"I1_000\n.",  # strtol stops at "_", PyLong_FromString accepts it
        b"I5 \n.",  # trailing space: PyLong_FromString accepts
        b"I 5\n.",
        b"I99999999999999999999\n.",  # past a C long: PyLong_FromString
        b"I099999999999999999999\n.",  # likewise, but with a leading zero: refused
        b"I99999999999999999999\x00x\n.",
        b"I\n.",  # an empty line: bad_readline
        b"L10L\n.",
        b"L0x10\n.",
        b"L010\n.",  # base 0: refused
        b"L1_0\n.",
        b"LL\n.",
        b"F1.5\n.",
        b"F 1.5\n.",  # PyOS_string_to_double allows no leading space
        b"F1.5 \n.",
        b"F1_0\n.",  # nor underscores (float() does)
        b"F1e309\n.",  # OverflowError in C (float() says inf)
        b"Finf\n.",
        b"F-Infinity\n.",
        b"Fnan\n.",
        b"F1e-400\n.",
        b"F1.5\x00junk\n.",
        b"F\n.",
        b"S'abc'\n.",
        b"S'\\xc3\\xa9'\n.",
        b"S'\\xff'\n.",  # not UTF-8: torch.load's strict decoding stops
        b"S'abc\"\n.",
        b"S'\n.",
        b"Vabc\\u00e9\n.",
        b"V\n.",
        b"K\x07p 1\n0g1\n.",
        b"K\x07p1_0\n0g10\n.",
        b"K\x07p-1\n0g-1\n.",
        b"K\x07p01\n0g1\x00x\n.",
        b"K\x07p\n.",
        b"cos\nsystem\n.",
        b"c\nsystem\n.",  # an empty module line: bad_readline
        b"cos\n\n.",
        b"c\xc3\xa9\nx\n.",
        b"c\xff\nx\n.",
    ],
)
def test_text_opcode_examples(data: bytes) -> None:
    _check(data)


def test_inst_names_are_ascii() -> None:
    # load_inst decodes its two lines as ASCII (GLOBAL as UTF-8): a non-ASCII name stops C pickle.
    with pytest.raises(ReadError, match="not ascii"):
        unpickle(b"(i\xc3\xa9\nx\n.")
    assert unpickle(b"(ios\nsystem\n.").globals == (GlobalRef("os", "system"),)
