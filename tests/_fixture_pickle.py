"""Test helper: load the pickle of a torch-zip checkpoint in the test fixtures without torch.

Only for the repository's own fixtures (files DeepSpeed wrote here): every global the pickle
names becomes a stand-in class, so nothing is imported. The library's own reader (issue 3)
is what users get; this helper only lets the registry tests look at real keys today.
"""

from __future__ import annotations

import collections
import pathlib
import pickle
import zipfile
from typing import Any


class Stub:
    """A pickled object of some class: its constructor args and its state."""

    qualname = ""

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class Tensor:
    def __init__(self, *args: Any) -> None:
        self.args = args


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module.startswith("torch") and name.startswith("_rebuild"):
            return Tensor
        if (module, name) == ("torch", "Size"):
            return tuple
        return type(name, (Stub,), {"qualname": f"{module}.{name}"})

    def persistent_load(self, pid: Any) -> Any:
        return ("storage", pid)


def load(path: pathlib.Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        with archive.open(name) as stream:
            return _Unpickler(stream).load()
