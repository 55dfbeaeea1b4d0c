"""TorchScript archives and records miniz extracts without writing, built byte by byte (no torch).

``torch.load`` takes a zip for a TorchScript archive when ``"constants.pkl"`` is among
``PyTorchStreamReader.getAllRecords()`` (``torch.serialization._is_torchscript_zip``) and hands it
to ``torch.jit.load``, which unpickles ``constants.pkl`` before ``data.pkl``, compiling the
classes it names from ``code/`` and running their ``__setstate__``. The payload here is such a
class whose ``__setstate__`` creates the canary with ``torch.from_file(path, shared=True)``.

Each :class:`Variant` says whether torch (2.13) takes the archive for TorchScript
(``torchscript``: ``None`` where torch's own check fails and ``torch.load`` raises before
dispatching) and whether the canary appears under ``torch.load(weights_only=False)`` (``runs``);
tests/test_torch_branches.py checks both against torch, tests/test_torchscript.py checks that
ckptkeys refuses exactly the archives torch takes for TorchScript.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass

from .security_cases import zip_archive

__all__ = ["Variant", "mark_central", "torchscript_variants"]


@dataclass(frozen=True)
class Variant:
    name: str
    data: bytes
    torchscript: bool | None
    runs: bool


# A TorchScript class as torch.jit.save writes it under code/: its __setstate__ maps the file
# named by its state (shared=True creates it); the attribute keeps the call from being dropped.
_CLASS = """class {name}:
  path : str
  marker : Tensor
  def __getstate__(self: {qualname}) -> str:
    return self.path
  def __setstate__(self: {qualname},
    state: str) -> NoneType:
    self.path = state
    self.marker = torch.from_file(state, True, 1, dtype=0)
    return None
"""


def _code(module: str, name: str) -> bytes:
    return _CLASS.format(name=name, qualname=f"{module}.{name}").encode()


def _object(module: str, name: str, canary: str) -> bytes:
    """Pickle ops (no PROTO, no STOP) that build ``module.name`` and BUILD it with the canary path."""
    path = canary.encode()
    return f"c{module}\n{name}\n".encode() + b")\x81X" + struct.pack("<I", len(path)) + path + b"b"


def _benign() -> bytes:
    """What a DeepSpeed model-states file's data.pkl could hold, with no tensor."""
    return pickle.dumps({"module": None, "dp_world_size": 1, "ds_version": "0.19.8"}, protocol=2)


def _standard(data: bytes, folder: bytes = b"archive") -> list[tuple[bytes, bytes]]:
    return [(folder + b"/data.pkl", data), (folder + b"/version", b"3\n"), (folder + b"/byteorder", b"little")]


def torchscript_variants(canary_folder: str) -> list[Variant]:
    """Archives with and without a record torch takes for TorchScript; payloads write into ``canary_folder``."""
    variants: list[Variant] = []

    def add(name: str, members: list[tuple[bytes, bytes]], torchscript: bool | None, runs: bool) -> None:
        variants.append(Variant(name, zip_archive(members), torchscript, runs))

    def canary(name: str) -> str:
        return f"{canary_folder}/{name}"

    # constants.pkl holds an object of the class, data.pkl a benign dict: torch.jit.load runs the
    # __setstate__ while unpickling constants.pkl, then fails on the dict (the code has run).
    evil = b"\x80\x02(" + _object("__torch__", "Evil", canary("benign-data")) + b"t."
    add(
        "benign-data",
        [
            *_standard(_benign()),
            (b"archive/code/__torch__.py", _code("__torch__", "Evil")),
            (b"archive/constants.pkl", evil),
        ],
        True,
        True,
    )
    # The class named torch.nn.parameter.Parameter, in data.pkl: what ckptkeys would class as
    # "allowed" if it read the pickle; torch.jit.load compiles code/torch/nn/parameter.py.
    weight = _object("torch.nn.parameter", "Parameter", canary("parameter"))
    param = b"\x80\x02}(X\x06\x00\x00\x00weight" + weight + b"u."
    add(
        "parameter-class",
        [
            *_standard(param),
            (b"archive/code/torch/nn/parameter.py", _code("torch.nn.parameter", "Parameter")),
            (b"archive/constants.pkl", b"\x80\x02)."),
        ],
        True,
        True,
    )
    empty = (b"\x80\x02).",)
    # constants.pkl the only record beyond torch.save's: torch dispatches, jit.load fails.
    add("only-constants", [*_standard(_benign()), (b"archive/constants.pkl", *empty)], True, False)
    # Its name cut at a NUL byte (getAllRecords copies C strings): torch dispatches.
    add("nul-in-name", [*_standard(_benign()), (b"archive/constants.pkl\0.txt", *empty)], True, False)
    # A 497-byte folder: the name is cut at 511 bytes, right after "constants.pkl".
    long = b"f" * 497
    add("cut-at-511", [*_standard(_benign(), long), (long + b"/constants.pkl.txt", *empty)], True, False)
    # What torch does not take for TorchScript: it reads data.pkl (and ckptkeys reads it too).
    for name, record in (
        ("upper-case", b"archive/CONSTANTS.PKL"),
        ("mixed-case", b"archive/Constants.pkl"),
        ("prefixed", b"archive/xconstants.pkl"),
        ("nested", b"archive/code/constants.pkl"),
        ("dot-slash", b"archive/./constants.pkl"),
    ):
        add(name, [*_standard(_benign()), (record, *empty)], False, False)
    add("directory", [*_standard(_benign()), (b"archive/constants.pkl/", b"")], False, False)
    # One byte short of the cut: the name torch sees is "constants.pk".
    longer = b"f" * 498
    add("cut-at-511-short", [*_standard(_benign(), longer), (longer + b"/constants.pkl", *empty)], False, False)
    # In another folder: getAllRecords throws, torch.load fails before dispatching.
    add("other-folder", [*_standard(_benign()), (b"other/constants.pkl", *empty)], None, False)
    # A record whose name is not UTF-8: the list of names cannot be made, torch.load fails.
    add("not-utf8", [*_standard(_benign()), (b"archive/constants.pkl", *empty), (b"archive/\xff", b"")], None, False)
    return variants


def mark_central(
    data: bytes, name: bytes, *, external: int | None = None, compressed: int | None = None, size: int | None = None
) -> bytes:
    """``data`` with the central directory entry of ``name`` changed: external attributes, sizes."""
    at = data.rindex(b"PK\x01\x02", 0, data.rindex(name))
    out = bytearray(data)
    if compressed is not None:
        struct.pack_into("<L", out, at + 20, compressed)
    if size is not None:
        struct.pack_into("<L", out, at + 24, size)
    if external is not None:
        struct.pack_into("<L", out, at + 38, external)
    return bytes(out)
