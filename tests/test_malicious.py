"""The malicious corpus: reading never runs, imports or writes anything.

tests/data/malicious/ (made by scripts/make_malicious_corpus.py) holds pickles that, loaded by
pickle or torch.load(weights_only=False), run os.system, eval, exec, subprocess.Popen,
runpy._run_code, import modules, or reach outside the archive. Each is read by ckptkeys in a
fresh process whose audit hook records every import, every file opened for writing and every
process started; the read must return inert records or raise ckptkeys' own error, the hook must
record nothing, and no canary file may appear.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from .conftest import DATA, ROOT

CORPUS = DATA / "malicious"
FILES = sorted(CORPUS.iterdir())

CHILD = textwrap.dedent(
    """
    import json, os, sys
    import ckptkeys
    from ckptkeys._cli import _report  # everything a read or inspect uses
    from ckptkeys._check import _validate
    from ckptkeys._read import _pickle, _reader
    import ckptkeys._check._layout, ckptkeys.naming, ckptkeys.schema, ckptkeys._check._converters, ckptkeys._read._torch
    import zipfile, zlib, struct, codecs, difflib
    import encodings.raw_unicode_escape, encodings.latin_1, encodings.cp437  # zipfile decodes names with cp437

    events = []
    WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def hook(event, args):
        if event == "import":
            events.append(["import", str(args[0])])
        elif event == "open":
            mode, flags = args[1], args[2]
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & WRITE):
                events.append(["open-for-write", str(args[0])])
        elif event.startswith(("os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "subprocess.")):
            events.append([event, repr(args)[:200]])
        elif event in ("exec", "compile", "builtins.input", "socket.connect", "ctypes.dlopen"):
            events.append([event, ""])

    results = {}
    sys.addaudithook(hook)
    for path in sys.argv[1:]:
        before = len(events)
        try:
            if path.endswith(".pkl"):
                with open(path, "rb") as stream:
                    value = _pickle.unpickle(stream.read(), source=path).value
            else:
                value = ckptkeys.read(path).data
            outcome = ["value", repr(value)[:300]]
        except ckptkeys.ReadError as error:
            outcome = ["read-error", str(error)]
        except BaseException as error:  # anything else is a failure of the promise
            outcome = ["other-error", f"{type(error).__name__}: {error}"]
        results[path] = {"outcome": outcome, "events": events[before:]}
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, list[object]]]:
    workdir = tmp_path_factory.mktemp("malicious")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, FILES)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert not list(workdir.iterdir()), "a canary file was created"
    assert not list(pathlib.Path.cwd().glob("ckptkeys-canary-*"))
    parsed: dict[str, dict[str, list[object]]] = json.loads(done.stdout)
    return parsed


def test_corpus_is_complete() -> None:
    names = {path.stem for path in FILES}
    for gadget in (
        "reduce_os_system",
        "reduce_posix_system",
        "reduce_builtins_eval",
        "reduce_builtins_exec",
        "reduce_builtins_getattr",
        "reduce_builtins_import",
        "reduce_subprocess_popen",
        "reduce_runpy_run_code",
        "reduce_importlib_import_module",
        "inst_os_system",
        "obj_os_system",
        "newobj_subprocess_popen",
        "newobj_ex_subprocess_popen",
        "build_setstate",
        "build_dict_on_opaque",
        "stack_global_non_string",
        "persid_not_a_storage",
        "persid_outside_archive",
        "ext1",
        "ext2",
        "ext4",
    ):
        assert gadget in names, gadget
    for path in FILES:
        if not path.stem.startswith("persid"):
            assert (CORPUS / f"{path.stem}.pkl").exists() and (CORPUS / f"{path.stem}.pt").exists()


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_nothing_runs_imports_or_writes(path: pathlib.Path, results: dict[str, dict[str, list[object]]]) -> None:
    result = results[str(path)]
    assert result["events"] == [], result["events"]
    kind, detail = result["outcome"]
    assert kind in ("value", "read-error"), detail
    if kind == "value":
        assert "Opaque" in str(detail) or "GlobalRef" in str(detail)


def test_inspect_names_code_execution_apart_from_ordinary_classes(tmp_path: pathlib.Path) -> None:
    path = CORPUS / "reduce_os_system.pt"
    result = subprocess.run(
        [sys.executable, "-m", "ckptkeys", "inspect", str(path)],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
        capture_output=True,
        text=True,
        check=False,
    )
    assert "CODE EXECUTION" in result.stdout and "    os.system" in result.stdout
    assert not list(tmp_path.iterdir())
    ordinary = subprocess.run(
        [sys.executable, "-m", "ckptkeys", "inspect", "--json", str(DATA / "fixtures" / "z1_fp16_ws2")],
        capture_output=True,
        text=True,
        check=True,
    )
    classes = {
        g["name"]: g["class"] for tag in json.loads(ordinary.stdout)["tags"] for f in tag["files"] for g in f["globals"]
    }
    assert classes["deepspeed.runtime.zero.config.ZeroStageEnum"] == "refused"
    assert classes["torch._utils._rebuild_tensor_v2"] == "allowed"
    assert "code-execution" not in classes.values()


@pytest.mark.parametrize("name", ["reduce_os_system.pkl", "reduce_builtins_exec.pkl", "inst_os_system.pkl"])
def test_the_harness_sees_what_a_real_unpickler_does(tmp_path: pathlib.Path, name: str) -> None:
    """Control: with pickle.loads in place of ckptkeys, the same child records the attack and the canary appears."""
    control = CHILD.replace(
        "_pickle.unpickle(stream.read(), source=path).value", "__import__('pickle').loads(stream.read())"
    )
    assert control != CHILD
    done = subprocess.run(
        [sys.executable, "-c", control, str(CORPUS / name)],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    (result,) = json.loads(done.stdout).values()
    assert result["events"], result
    assert [path.name for path in tmp_path.iterdir()] == [f"ckptkeys-canary-{pathlib.Path(name).stem}"]
