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


def launch_ranks(command: list[str], world: int, *, timeout: float = 900) -> list[str]:
    """Run ``command`` as ``world`` ranks of one job on gloo (``DS_ACCELERATOR=cpu``), as a launcher would.

    Asserts every rank exits 0 (with the end of a failing rank's output) and returns the outputs.
    When a rank lost the rendezvous port to another process, the job is run once more on a new port.
    """
    for attempt in range(2):
        port = str(_free_port())
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
            ranks.append(
                subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            )
        results: list[tuple[int | None, str]] = []
        for process in ranks:
            try:
                output, _ = process.communicate(timeout=timeout)
            finally:
                if process.returncode not in (None, 0):
                    for other in ranks:
                        if other.poll() is None:
                            other.kill()
            results.append((process.returncode, output))
        failed = [output for code, output in results if code != 0]
        if failed and attempt == 0 and any(marker in out for out in failed for marker in _PORT_RACE):
            continue
        for code, output in results:
            assert code == 0, output[-3000:]
        return [output for _, output in results]
    raise AssertionError("unreachable")
