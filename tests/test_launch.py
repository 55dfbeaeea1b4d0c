"""The multi-rank launcher of the DeepSpeed-backed tests retries only a runtime abort or a lost port."""

from __future__ import annotations

import pathlib
import sys

import pytest

from .conftest import launch_ranks

# Rank 1 aborts (SIGABRT, as DeepSpeed's C++ runtime sometimes does) the first time, unless told to
# fail with a Python error; rank 0 waits for rank 1's marker as a collective would, forever.
SCRIPT = """
import os, pathlib, sys, time
out = pathlib.Path(sys.argv[1]); mode = sys.argv[2]
out.mkdir(exist_ok=True)
rank = int(os.environ["RANK"])
attempts = pathlib.Path(sys.argv[3])
if rank == 1:
    first = not attempts.exists()
    attempts.write_text("x")
    if mode == "python-error":
        raise SystemExit("a Python error")
    if first:
        os.abort()
    (out / "done").write_text("1")
else:
    while not (out / "done").exists():
        time.sleep(0.05)
"""


def test_an_abort_is_run_once_more(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    outputs = launch_ranks([sys.executable, "-c", SCRIPT, str(out), "abort", str(tmp_path / "tried")], 2, output=out)
    assert len(outputs) == 2 and (out / "done").exists()


def test_a_python_error_is_not_retried(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(AssertionError, match="a Python error"):
        launch_ranks([sys.executable, "-c", SCRIPT, str(out), "python-error", str(tmp_path / "tried")], 2, timeout=60)
