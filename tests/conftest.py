"""Shared paths and helpers for the test suite."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
FIXTURES = DATA / "fixtures"
REFERENCE = DATA / "deepspeed-0.19.8-constants.json"


def reference_constants() -> list[dict[str, Any]]:
    """The 96 constants of deepspeed.checkpoint.constants 0.19.8, as recorded from DeepSpeed itself."""
    constants: list[dict[str, Any]] = json.loads(REFERENCE.read_text(encoding="utf-8"))["constants"]
    return constants


def ds_to_universal(tag: pathlib.Path, output: pathlib.Path, *options: str) -> subprocess.CompletedProcess[str]:
    """Run DeepSpeed's own ``ds_to_universal`` converter on one tag folder (needs DeepSpeed)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "deepspeed.checkpoint.ds_to_universal",
            *("--input_folder", str(tag), "--output_folder", str(output)),
            *("--num_extract_workers", "1", "--num_merge_workers", "1"),
            *options,
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, DS_ACCELERATOR="cpu"),
        check=False,
        timeout=600,
    )


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# What a rank prints when the rendezvous port it was given was taken between choosing it and
# binding it: a launch race, not a failure of the code under test.
_PORT_RACE = ("Address already in use", "EADDRINUSE")


def _launch_flake(returncode: int | None, output: str) -> bool:
    """A rank that lost its port, or that the C++ runtime aborted (a signal, not a Python error):
    DeepSpeed's CPU runtime on gloo does that now and then ("terminate called without an active
    exception", SIGABRT), whatever the script it runs."""
    return any(marker in output for marker in _PORT_RACE) or (returncode is not None and returncode < 0)


def launch_ranks(
    command: list[str], world: int, *, output: pathlib.Path | None = None, timeout: float = 900
) -> list[str]:
    """Run ``command`` as ``world`` ranks of one job on gloo (``DS_ACCELERATOR=cpu``), as a launcher would.

    Asserts every rank exits 0 (with the end of a failing rank's output) and returns the outputs.
    When a rank lost the rendezvous port, or the runtime aborted it with a signal, the job is run
    once more, on a new port, after removing ``output`` (the folder the job writes). A Python
    error in a rank is never retried.
    """
    import shutil
    import tempfile
    import time

    for attempt in range(2):
        if attempt and output is not None:
            shutil.rmtree(output, ignore_errors=True)
        port = str(_free_port())
        with tempfile.TemporaryDirectory() as logs:
            ranks = []
            for rank in range(world):
                env = dict(
                    os.environ,
                    DS_ACCELERATOR="cpu",
                    RANK=str(rank),
                    LOCAL_RANK=str(rank),
                    WORLD_SIZE=str(world),
                    LOCAL_WORLD_SIZE=str(world),
                    MASTER_ADDR="127.0.0.1",
                    MASTER_PORT=port,
                )
                with open(os.path.join(logs, str(rank)), "w") as log:  # a file: no pipe to fill up
                    ranks.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
            # Wait for all; once one rank fails (or time runs out) the others, who would wait for
            # it in a collective forever, are killed.
            deadline = time.monotonic() + timeout
            killed: set[int] = set()
            while None in (codes := [process.poll() for process in ranks]):  # poll every rank, every time
                if time.monotonic() > deadline or any(code not in (None, 0) for code in codes):
                    for rank, process in enumerate(ranks):
                        if process.poll() is None:
                            process.kill()
                            killed.add(rank)
                    break
                time.sleep(0.1)
            results = []
            for rank, process in enumerate(ranks):
                process.wait()
                with open(os.path.join(logs, str(rank))) as log:
                    results.append((process.returncode, log.read()))
        failed = [(code, text) for code, text in results if code != 0]
        if failed and attempt == 0 and all(_launch_flake(code, text) for code, text in failed):
            print(f"launch_ranks: retrying {command[1:2]} after {[code for code, _ in failed]}", file=sys.stderr)
            continue
        # The ranks that failed on their own first: their output says why, not the ones killed after.
        for rank in sorted(range(world), key=lambda rank: rank in killed):
            code, text = results[rank]
            assert code == 0, text[-3000:]
        return [text for _, text in results]
    raise AssertionError("unreachable")
