"""Kill tests and the deletion/truncation matrix of ``ckptkeys universal`` (after tests/test_kill.py).

Each trial runs the command in a child process and sends it SIGKILL, SIGTERM or SIGINT after a
random (seeded) delay, over three scenarios: a conversion into an empty save folder, one with
``--overwrite`` over an older universal tag (and a ``latest_universal`` naming it), and one step
of a job array (``--shard 1/2``, ``--shard 2/2``, ``--finalize``). Afterwards the output folder
is absent, the old tag whole or the new one whole, never a partial tag; ``latest_universal`` is
absent or names a folder that is there and whole; every other name in the save folder is the
source's, or (after SIGKILL, or a job array's step) a staging or set-aside folder that the next
run deals with; after a signal the command caught (exit 128 + N) no temporary file is left. Then
the step runs once more with the steps after it, and the new tag must be there whole, alone.

The child converts with a plan made by hand (``tests/universal_hand.py``) over a 12 MiB tag of
random float32 records built byte by byte (``export_values.Case``), ~40 MB of output: big enough
that writing takes a visible part of a run, whatever the planner of the day plans for it. The
delays are drawn from the time a ``--dry-run`` takes to the time a whole run takes, measured once.
The full loop (18 trials per signal) runs on Python 3.11; the other versions run a few trials.

The matrix: every file of the fixture tags the command converts deleted, emptied, cut to 1 byte,
to half and to all but one byte: the command refuses naming that file and writes nothing.
"""

from __future__ import annotations

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

from .conftest import FIXTURES
from .export_values import Case, Storage, Tensor
from .universal_hand import hand_plan

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

SRC = str(pathlib.Path(ckptkeys.__file__).parent.parent)
ROOT = str(pathlib.Path(__file__).parent.parent)
TEMP = re.compile(r"\.tmp-.+\.[0-9a-f]{12}")
FULL = sys.version_info[:2] == (3, 11)
TRIALS = 18 if FULL else 3  # per signal
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}
SCENARIOS = ("fresh", "overwrite", "job-array")
OUT = "global_step1_universal"
HIDDEN = {f".{OUT}.ckptkeys-partial", f".{OUT}.ckptkeys-old"}

# The command in a child, its planner swapped for the hand-made plan of the tag it is given.
CHILD = """
import sys
import ckptkeys._universal._entry as entry
from tests.universal_hand import hand_plan
import pathlib
entry.plan_universal = lambda path, **options: hand_plan(pathlib.Path(path), params=8)
from ckptkeys._cli import main
sys.exit(main(["universal", *sys.argv[1:]]))
"""


def _build(tag: pathlib.Path, seed: int) -> pathlib.Path:
    """A tag folder: 24 float32 records of 512 KiB with random bytes (another seed, other bytes)."""
    rng = random.Random(seed)
    numel = 128 * 1024
    storages, tensors, records = [], {}, {}
    for i in range(24):
        storages.append(Storage(key=str(i), dtype="float32", numel=numel))
        tensors[f"layers.{i}.weight"] = Tensor(storage=i, offset=0, shape=(numel,), stride=(1,))
        records[str(i)] = rng.randbytes(numel * 4)
    Case(storages, tensors, records).write(tag)
    (tag.parent / "latest").write_text(tag.name)
    return tag


def _tree(folder: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _outcome(save: pathlib.Path, old: dict[str, bytes], new: dict[str, bytes]) -> str:
    """What the save folder holds: ``nothing``, ``old`` or ``new``; AssertionError for anything else."""
    out, latest = save / OUT, save / "latest_universal"
    state = "nothing"
    if out.exists():
        tree = _tree(out)
        assert tree in (old, new), f"{out}: a partial or mixed tag ({len(tree)} files)"
        state = "old" if tree == old else "new"
    if latest.exists():
        assert latest.read_text() == OUT and state != "nothing", f"{latest} names a missing folder"
    return state


def _temps(save: pathlib.Path) -> list[str]:
    names = [p for p in save.rglob("*")]
    return sorted(str(p.relative_to(save)) for p in names if TEMP.fullmatch(p.name))


def _strange(save: pathlib.Path) -> list[str]:
    known = {"global_step1", "latest", "latest_universal", OUT, *HIDDEN}
    return sorted(set(os.listdir(save)) - known)


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, ROOT, os.environ.get("PYTHONPATH", "")]))


def _child(argv: list[str]) -> list[str]:
    return [sys.executable, "-c", CHILD, *argv]


def _default_signals() -> None:
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_child(argv), env=_env(), capture_output=True, text=True, check=False)


class Scenario:
    """A trial's save folder as found, the step it kills, and the run that completes it."""

    def __init__(self, kind: str, rng: random.Random) -> None:
        self.kind = kind
        self.steps: list[list[str]] = [[]]
        if kind == "overwrite":
            self.steps = [["--overwrite"]]
        elif kind == "job-array":
            self.steps = [["--shard", "1/2", "--overwrite"], ["--shard", "2/2", "--overwrite"], ["--finalize",
                          "--overwrite"]]  # fmt: skip
        self.step = rng.randrange(len(self.steps))

    def prepare(self, save: pathlib.Path, world: dict[str, Any]) -> None:
        shutil.rmtree(save, ignore_errors=True)
        shutil.copytree(world["b"], save)
        if self.kind != "fresh":  # the old tag, from the other source, and its pointer
            shutil.copytree(world["old"], save / OUT)
            (save / "latest_universal").write_text(OUT)
        for step in self.steps[: self.step]:
            done = _run([str(save / "global_step1"), "-q", *step])
            assert done.returncode == 0, done.stderr

    def finish(self, save: pathlib.Path) -> None:
        staging = save / f".{OUT}.ckptkeys-partial"
        if self.kind == "job-array" and self.step == 2 and not staging.exists():  # finalize published before it died
            return
        for step in self.steps[self.step :]:
            argv = [str(save / "global_step1"), "-q", *step]
            done = _run(argv if "--overwrite" in step else [*argv, "--overwrite"])
            assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("ukill")
    a = _build(root / "a" / "global_step1", 1).parent
    b = _build(root / "b" / "global_step1", 2).parent
    ckptkeys.write_universal(hand_plan(a / "global_step1", params=8), fsync=False)
    reference = root / "reference"
    shutil.copytree(b, reference)
    ckptkeys.write_universal(hand_plan(reference / "global_step1", params=8), fsync=False)
    start = time.monotonic()
    assert _run([str(b / "global_step1"), "--dry-run"]).returncode == 0
    plan_only = time.monotonic() - start
    scratch = root / "scratch"
    shutil.copytree(b, scratch)
    start = time.monotonic()
    assert _run([str(scratch / "global_step1"), "-q"]).returncode == 0
    whole = time.monotonic() - start
    return {"b": b, "old": a / OUT, "old_tree": _tree(a / OUT), "new_tree": _tree(reference / OUT),
            "window": (plan_only, whole), "root": root}  # fmt: skip


@pytest.mark.parametrize("signame", list(SIGNALS))
def test_a_killed_conversion_leaves_the_old_tag_the_new_or_none(signame: str, world: dict[str, Any]) -> None:
    rng = random.Random(f"universal-kill-{signame}")
    low, high = world["window"]
    old, new = world["old_tree"], world["new_tree"]
    outcomes: dict[str, int] = {}
    for trial in range(TRIALS):
        scenario = Scenario(SCENARIOS[trial % len(SCENARIOS)], rng)
        save = world["root"] / f"save-{signame}"
        scenario.prepare(save, world)
        before = _outcome(save, old, new)
        child = subprocess.Popen(
            _child([str(save / "global_step1"), "-q", *scenario.steps[scenario.step]]),
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_default_signals,
        )
        time.sleep(rng.uniform(0.8 * low, 1.1 * high))
        child.send_signal(SIGNALS[signame])
        _, stderr = child.communicate()
        where = f"trial {trial} ({scenario.kind}, step {scenario.step}, exit {child.returncode}): {stderr[-300:]}"
        after = _outcome(save, old, new)
        assert after in (("nothing", "new") if before == "nothing" else ("old", "new", "nothing")), where
        assert _strange(save) == [], where
        left = _temps(save)
        status = 128 + SIGNALS[signame]
        assert child.returncode in (0, status, -SIGNALS[signame]), where
        if child.returncode == status:  # the command's own handler: its temporary files gone, one line
            assert left == [], where
            if scenario.kind != "job-array":  # a whole run's staging folder goes with it
                assert not (save / f".{OUT}.ckptkeys-partial").exists(), where
            said = [line for line in stderr.splitlines() if "interrupted" in line]
            assert said == [said[0]] and said[0].startswith(f"ckptkeys universal: interrupted ({signame})"), where
            assert "Traceback" not in stderr, where
        key = f"{scenario.kind}:{after}:{'temps' if left else 'clean'}:exit {child.returncode}"
        outcomes[key] = outcomes.get(key, 0) + 1
        scenario.finish(save)
        assert _outcome(save, old, new) == "new", where
        assert sorted(os.listdir(save)) == sorted(["global_step1", "latest", "latest_universal", OUT]), where
    print(signame, sorted(outcomes.items()))  # with -s: where the kills landed


def _convertible() -> list[pathlib.Path]:
    """The fixture tags the command converts (with --inject-missing-state where they lack the info)."""
    found = []
    for save in sorted(p for p in FIXTURES.iterdir() if p.is_dir()):
        try:
            plan = ckptkeys.plan_universal(save, inject_missing_state=True)
        except ckptkeys.ExportError:
            continue
        found.append(pathlib.Path(plan.checkpoint))
    return found


CUTS = ("deleted", "empty", "1 byte", "half", "all but 1 byte")


def _damage(path: pathlib.Path, cut: str) -> None:
    data = path.read_bytes()
    if cut == "deleted":
        path.unlink()
    else:
        keep = {"empty": 0, "1 byte": 1, "half": len(data) // 2, "all but 1 byte": len(data) - 1}[cut]
        path.write_bytes(data[:keep])


def test_the_matrix_covers_the_layouts() -> None:
    layouts = {ckptkeys.plan_universal(tag, inject_missing_state=True).layout for tag in _convertible()}
    assert {"zero-1/2", "zero-1/2 tp", "pipeline", "zero-3"} <= layouts


@pytest.mark.parametrize("tag", _convertible(), ids=lambda tag: tag.parent.name)
def test_a_deleted_or_truncated_source_file_is_refused_naming_it(
    tag: pathlib.Path, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ckptkeys._cli._main import main

    names = sorted(p.name for p in tag.iterdir() if p.is_file())
    assert names
    for name in names:
        for cut in CUTS:
            save = tmp_path / f"{name}-{cut}"
            shutil.copytree(tag.parent, save)
            shutil.rmtree(save / f"{tag.name}_universal", ignore_errors=True)  # a fixture's own conversion
            (save / "latest_universal").unlink(missing_ok=True)
            before = sorted(os.listdir(save))
            _damage(save / tag.name / name, cut)
            status = main(["universal", str(save), "--tag", tag.name, "--inject-missing-state", "-q"])
            err = capsys.readouterr().err
            where = f"{tag.parent.name}/{tag.name}/{name} {cut}: exit {status}: {err}"
            assert status in (1, 2), where
            assert len(err.splitlines()) == 1 and name in err, where
            assert sorted(os.listdir(save)) == before, where  # no tag, no latest_universal, no staging folder
            shutil.rmtree(save)
