"""The differential oracle: the globals ``torch.load`` resolves, against the globals ``ckptkeys`` reports.

``torch.load(path, weights_only=False, pickle_module=...)`` is given a pickle module whose
``Unpickler.find_class`` calls C pickle's own ``find_class`` (the real resolution: Python 2
renaming, dotted names, torch's wrapper before it) and records the object it returns. Objects on
torch's weights-only allow-list are handed back, so real checkpoints load as usual; every other
object is replaced by an inert stub, so nothing the file names is ever called. The same
``pickle_module`` serves the legacy format's plain ``pickle.load`` calls.

A *finding* is an object torch resolved that is not the resolution of any global ckptkeys
reported (in the result, or in the error's ``globals``), for a file ckptkeys did not refuse as
ambiguous or unsupported. Resolving ckptkeys' names imports modules: run this only on inputs
whose names torch's unpickler imports anyway (a fuzzing sandbox, the test corpus).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pathlib
import pickle
import subprocess
import sys
import types
from typing import Any

import ckptkeys
from ckptkeys._read import _globals


class _Stub:
    """What a recorded global becomes: calls, attributes and state all land here, inertly."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __call__(self, *args: object, **kwargs: object) -> _Stub:
        return _Stub()

    def __getattr__(self, name: str) -> _Stub:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Stub()

    def __setstate__(self, state: object) -> None:
        pass


def _allowed_objects() -> set[int]:
    from torch._weights_only_unpickler import _get_allowed_globals

    return {id(obj) for obj in _get_allowed_globals().values()}


def torch_resolved(path: str) -> list[Any]:
    """Every object C pickle's find_class resolved while ``torch.load(path, weights_only=False)`` ran."""
    import torch

    allowed = _allowed_objects()
    resolved: list[Any] = []

    class Recorder(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            obj = super().find_class(module, name)
            resolved.append(obj)
            return obj if id(obj) in allowed else _Stub

    recording = types.ModuleType("pickle")
    recording.Unpickler = Recorder  # type: ignore[attr-defined]
    recording.load = lambda file, **kwargs: Recorder(file, **kwargs).load()  # type: ignore[attr-defined]
    recording.__dict__.update({k: v for k, v in vars(pickle).items() if k not in ("Unpickler", "load")})
    # The stubs make most loads fail; what was resolved before that counts.
    with contextlib.suppress(BaseException):
        torch.load(path, weights_only=False, pickle_module=recording)
    return resolved


def _resolve(ref: ckptkeys.GlobalRef) -> Any:
    try:
        obj: Any = importlib.import_module(ref.module)
        for part in ref.name.split("."):
            obj = getattr(obj, part)
    except Exception:
        return None
    return obj


def findings(path: str) -> list[str]:
    """What torch resolved that ckptkeys did not report; empty when they agree (or ckptkeys refused)."""
    try:
        refs = ckptkeys.read(path).globals
    except (ckptkeys.AmbiguousFileError, ckptkeys.UnsupportedFormatError):
        return []  # refused, loudly: nothing is claimed about the file
    except ckptkeys.ReadError as error:
        refs = error.globals
    ours = {id(obj) for obj in map(_resolve, refs) if obj is not None}
    missing = [obj for obj in torch_resolved(path) if id(obj) not in ours]
    return [f"torch resolved {getattr(o, '__module__', '?')}.{getattr(o, '__qualname__', o)!s}" for o in missing]


def allowed_claims_hold(refs: list[ckptkeys.GlobalRef]) -> list[str]:
    """Globals ckptkeys calls "allowed" that torch's weights-only unpickler refuses when asked directly."""
    import io

    from torch._weights_only_unpickler import Unpickler

    wrong = []
    for ref in refs:
        if _globals.classify(ref) != "allowed":
            continue
        module, name = ref.written or (ref.module, ref.name)
        data = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n."
        try:
            Unpickler(io.BytesIO(data)).load()
        except Exception as error:
            wrong.append(f"{ref.qualname}: {error}")
    return wrong


_LOAD_ALL = """
import sys, warnings
import torch
warnings.simplefilter("ignore")
for path in sys.argv[1:]:
    try:
        torch.load(path, weights_only=False)
    except BaseException:
        pass
"""


def torch_load_all(paths: list[pathlib.Path], cwd: pathlib.Path, **env: str) -> None:
    """``torch.load(path, weights_only=False)`` of each file in one child interpreter run in ``cwd``
    (where the payloads' canaries are written), its errors ignored: what a victim would run."""
    subprocess.run(
        [sys.executable, "-c", _LOAD_ALL, *map(str, paths)],
        cwd=cwd,
        capture_output=True,
        check=True,
        timeout=600,
        env={**os.environ, **env},
    )
