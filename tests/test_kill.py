"""Kill tests: ``ckptkeys export`` killed at random moments leaves the old export, the new one, or nothing.

Each trial runs ``python -m ckptkeys export`` in a child process and sends it SIGKILL, SIGTERM or
SIGINT after a random (seeded) delay, over four scenarios: a single file into an empty folder, a
sharded export into an empty folder, ``--overwrite`` over an older export of other content (and
another shard count, or single <-> sharded), and one step of a job array (``--shard K/N
--overwrite`` or ``--index-only``) over an older export. Afterwards ``OUT_DIR`` is loaded as
``transformers`` would (``model.safetensors`` first, else the index and every file it names,
with a small safetensors reader of its own) and every tensor's bytes must be those of the old
export or of the new one, all of them: never a mix, never a partial file. Every name in
``OUT_DIR`` is an output name or a recognisable temporary name; after SIGTERM or SIGINT caught by
the command (exit 143 or 130), none is a temporary name. Then the same export runs once more
(in this process) and must leave the complete new export and no temporary file.

The checkpoints are built byte by byte (``export_values.Case``: no torch), 12 MiB each, large
enough that writing takes a visible part of a run; the delays are drawn around the write, from
the time a ``--dry-run`` takes (start-up and planning) to the time a whole export takes,
measured once per scenario. The full loop (50 trials per signal) runs on Python 3.11 only: it
spawns some 150 interpreters, and the code under test (renames, locks, signal handlers) is the
same on every version; the other versions run a few trials of each kind.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

import ckptkeys
from ckptkeys._export._write import INDEX_FILE, write_export

from .export_values import Case, Storage, Tensor

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

SRC = str(pathlib.Path(ckptkeys.__file__).parent.parent)
TEMP = re.compile(r"\.tmp-.+\.[0-9a-f]{12}")
OUTPUT = re.compile(r"model\.safetensors|model\.safetensors\.index\.json|model-\d{5}-of-\d{5}\.safetensors")
FULL = sys.version_info[:2] == (3, 11)
TRIALS = 50 if FULL else 4  # per signal
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}
SCENARIOS = ("single", "sharded", "overwrite", "job-array")
Tensors = dict[str, tuple[str, list[int], bytes]]


def _build(tag: pathlib.Path, seed: int) -> pathlib.Path:
    """A ZeRO-0 tag folder: 24 float32 tensors of 512 KiB with random bytes (another seed, other bytes)."""
    rng = random.Random(seed)
    numel = 128 * 1024
    storages, tensors, records = [], {}, {}
    for i in range(24):
        storages.append(Storage(key=str(i), dtype="float32", numel=numel))
        tensors[f"layers.{i}.weight"] = Tensor(storage=i, offset=0, shape=(numel,), stride=(1,))
        records[str(i)] = rng.randbytes(numel * 4)
    Case(storages, tensors, records).write(tag)
    return tag


def _read_file(path: pathlib.Path) -> Tensors:
    """Every tensor of a safetensors file: dtype, shape, bytes; AssertionError if it is not whole."""
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    header.pop("__metadata__", None)
    body = data[8 + length :]
    out = {}
    end = 0
    for name, entry in header.items():
        begin, stop = entry["data_offsets"]
        assert stop <= len(body), f"{path.name}: {name} ends past the file"
        out[name] = (entry["dtype"], entry["shape"], body[begin:stop])
        end = max(end, stop)
    assert end == len(body), f"{path.name}: {len(body) - end} bytes after the last tensor"
    return out


def _load(out: pathlib.Path) -> Tensors | None:
    """What a loader finds in ``out``, as transformers looks: ``model.safetensors``, else the index."""
    single, index = out / "model.safetensors", out / INDEX_FILE
    if single.exists():
        return _read_file(single)
    if not index.exists():
        return None
    weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
    loaded: Tensors = {}
    files = {name: _read_file(out / name) for name in sorted(set(weight_map.values()))}
    for tensor, name in weight_map.items():
        loaded[tensor] = files[name][tensor]
    return loaded


def _outcome(out: pathlib.Path, old: Tensors | None, new: Tensors) -> str:
    loaded = _load(out)
    if loaded is None:
        return "nothing"
    if loaded == new:
        return "new"
    if old is not None and loaded == old:
        return "old"
    mixed = sorted(k for k in loaded if old is not None and k in old and loaded[k] == old[k])
    raise AssertionError(f"{out}: a loader finds neither export whole (old tensors: {mixed[:4]}...)")


def _temps(out: pathlib.Path) -> list[str]:
    names = os.listdir(out) if out.exists() else []
    strange = [n for n in names if not (OUTPUT.fullmatch(n) or TEMP.fullmatch(n))]
    assert not strange, f"names neither an output nor a temporary file: {strange}"
    return sorted(n for n in names if TEMP.fullmatch(n))


class Scenario:
    """The command of a scenario's trial, the state before it, and the run that completes it."""

    def __init__(self, kind: str, root: pathlib.Path, rng: random.Random) -> None:
        self.kind, self.root = kind, root
        self.a, self.b = root / "a" / "global_step1", root / "b" / "global_step1"
        self.old_size, self.new_size = "2MB", "2MB"
        if kind == "single":
            self.new_size = "1GB"
        elif kind == "overwrite":  # old sharded -> new other shard count, single -> sharded, sharded -> single
            self.old_size, self.new_size = rng.choice([("3MB", "2MB"), ("1GB", "2MB"), ("2MB", "1GB")])
        self.steps: list[list[str]] = [[]]
        if kind == "job-array":
            self.steps = [["--shard", "1/2", "--overwrite"], ["--shard", "2/2", "--overwrite"], ["--index-only"]]
        elif kind == "overwrite":
            self.steps = [["--overwrite"]]
        self.step = rng.randrange(len(self.steps))

    def prepare(self, out: pathlib.Path, reference: dict[str, pathlib.Path]) -> None:
        """``out`` as the trial finds it: empty, or the old export and the job array's earlier steps."""
        shutil.rmtree(out, ignore_errors=True)
        if self.kind in ("overwrite", "job-array"):
            shutil.copytree(reference[f"a-{self.old_size}"], out)
        for step in self.steps[: self.step]:
            self.run_in_process(out, step)

    def argv(self, out: pathlib.Path, step: list[str]) -> list[str]:
        return ["export", str(self.b), str(out), "--max-shard-size", self.new_size, "-q", *step]

    def run_in_process(self, out: pathlib.Path, step: list[str]) -> None:
        from ckptkeys._cli._main import main

        assert main(self.argv(out, step)) == 0

    def finish(self, out: pathlib.Path) -> None:
        """The interrupted step once more, with --overwrite (what a user reruns), and the steps after it."""
        for step in self.steps[self.step :]:
            self.run_in_process(out, [*step, "--overwrite"] if "--overwrite" not in step else step)


def _child(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "ckptkeys", *argv]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))


def _default_sigint() -> None:
    # A child of a background shell inherits SIGINT ignored, one under nohup SIGHUP: the signals
    # the test sends must reach the command as a terminal or a scheduler sends them.
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)


def _timed(argv: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(_child(argv), env=_env(), check=True, capture_output=True)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("kill")
    _build(root / "a" / "global_step1", 1)
    _build(root / "b" / "global_step1", 2)
    reference: dict[str, pathlib.Path] = {}
    tensors: dict[str, Tensors | None] = {}
    for name, tag in (("a", root / "a" / "global_step1"), ("b", root / "b" / "global_step1")):
        for size in ("1GB", "2MB", "3MB"):
            out = root / f"ref-{name}-{size}"
            ckptkeys.export(tag, out, max_shard_size=size, fsync=False)
            reference[f"{name}-{size}"] = out
            tensors[name] = _load(out)
    # The delay window: from start-up plus planning (a --dry-run) to a whole export.
    scratch = root / "scratch"
    plan_only = _timed(["export", str(root / "b" / "global_step1"), str(scratch), "--dry-run"])
    whole = max(_timed(["export", str(root / "b" / "global_step1"), str(scratch / str(i)), "-q"]) for i in range(2))
    return {"root": root, "reference": reference, "a": tensors["a"], "b": tensors["b"], "window": (plan_only, whole)}


@pytest.mark.parametrize("signame", list(SIGNALS))
def test_killed_export_leaves_the_old_the_new_or_nothing(signame: str, world: dict[str, Any]) -> None:
    rng = random.Random(f"kill-{signame}")
    low, high = world["window"]
    outcomes: dict[str, int] = {}
    for trial in range(TRIALS):
        kind = SCENARIOS[trial % len(SCENARIOS)]
        scenario = Scenario(kind, world["root"], rng)
        out = world["root"] / f"out-{signame}"
        scenario.prepare(out, world["reference"])
        before = _outcome(out, world["a"], world["b"])
        child = subprocess.Popen(
            _child(scenario.argv(out, scenario.steps[scenario.step])),
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_default_sigint,
        )
        time.sleep(rng.uniform(0.8 * low, 1.1 * high))
        child.send_signal(SIGNALS[signame])
        _, stderr = child.communicate()
        where = f"trial {trial} ({kind}, step {scenario.step}, exit {child.returncode}): {stderr[-300:]}"
        after = _outcome(out, world["a"], world["b"])
        if before == "nothing":
            assert after in ("nothing", "new"), where
        else:  # the old export whole before: the old, the new, or nothing loadable after
            assert after in ("old", "new", "nothing"), where
        left = _temps(out)
        status = 128 + SIGNALS[signame]
        if child.returncode == status:  # the command's own handler: one line, its temporary files gone
            assert left == [], where
            # One line, the last (a signal after the export's closing lines follows them), no traceback.
            lines = stderr.splitlines()
            assert lines[-1].startswith(f"ckptkeys export: interrupted ({signame})"), where
            assert not any("interrupted" in line or "Traceback" in line for line in lines[:-1]), where
        key = f"{kind}:{after}:{'temps' if left else 'clean'}:exit {child.returncode}"
        outcomes[key] = outcomes.get(key, 0) + 1
        scenario.finish(out)
        assert _outcome(out, world["a"], world["b"]) == "new", where
        assert _temps(out) == [], where
    print(signame, sorted(outcomes.items()))  # with -s: where the kills landed


def test_stale_temporary_files_go_but_a_locked_one_stays(tmp_path: pathlib.Path) -> None:
    """The next run removes a dead run's temporary files, never one another process holds locked."""
    import fcntl

    from ckptkeys._read._files import create_new, discard_temp

    tag = _build(tmp_path / "b" / "global_step1", 2)
    out = tmp_path / "out"
    out.mkdir()
    dead = out / ".tmp-model-00001-of-00008.safetensors.0123456789ab"
    dead.write_bytes(b"half a shard")
    foreign = out / ".tmp-notes.txt.0123456789ab"  # not a name an export writes: not ours to remove
    foreign.write_bytes(b"")
    live, stream = create_new(str(out / "model.safetensors"))  # held (and locked) as a running job holds it
    try:
        with open(live, "rb") as probe:  # the lock is there: another descriptor cannot take it
            with pytest.raises(BlockingIOError):
                fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        found: list[str] = []
        write_export(ckptkeys.plan_export(tag, max_shard_size="2MB"), out, fsync=False, leftovers=found.extend)
        assert found == [str(dead)]
        assert os.path.exists(live) and foreign.exists() and not dead.exists()
    finally:
        discard_temp(live)
    assert not os.path.exists(live)


class _Writes(list[str]):
    """Standard error that records each write (not a terminal: no progress line)."""

    def write(self, text: str) -> int:
        self.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def test_each_line_on_standard_error_is_one_write(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal lands between two writes, never inside one: a line written in two (print's text,
    then its newline) would have the `interrupted` line glued to its end (seen in CI, trial 28 of
    SIGINT: the summary's last line, then `ckptkeys export: interrupted (SIGINT)` on the same line)."""
    from ckptkeys._cli._main import main

    tag = _build(tmp_path / "b" / "global_step1", 2)
    out = tmp_path / "out"
    for argv in (
        ["export", str(tag), str(out)],  # the summary and the note on the names' prefix
        ["export", str(tag), str(out)],  # exists: the error line
        ["keys", "nonesuch"],  # a usage error
    ):
        writes = _Writes()
        monkeypatch.setattr(sys, "stderr", writes)
        main(argv)
        monkeypatch.undo()
        assert writes, argv
        assert all(text.endswith("\n") and "\n" not in text[:-1] for text in writes), (argv, writes)
