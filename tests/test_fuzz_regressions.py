"""Inputs the fuzzer (fuzz/fuzz_reader.py) once broke the reader with: each must now end in a result or a ReadError."""

from __future__ import annotations

import contextlib
import io
import pathlib

import pytest

from ckptkeys import ReadError
from ckptkeys._read import _pickle, _reader
from ckptkeys._read._limits import Limits

from .conftest import DATA

FILES = sorted((DATA / "fuzz_regressions").iterdir())
LIMITS = Limits(max_pickle_bytes=1 << 20, max_objects=100_000, max_memo=100_000, max_string_bytes=1 << 16)


def test_there_are_regressions() -> None:
    assert FILES


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_regression(path: pathlib.Path) -> None:
    data = path.read_bytes()
    with contextlib.suppress(ReadError):
        _pickle.unpickle(data, limits=LIMITS)
    for reader in (_reader._read_zip, _reader._read_legacy):
        try:
            reader(path.name, io.BytesIO(data), len(data), LIMITS)
        except ReadError as error:
            assert path.name in str(error)
