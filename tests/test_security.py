"""Issue 12: files built so that torch.load runs a payload are flagged or refused, never shown clean.

The cases (tests/security_cases.py) cover the four families: globals the real unpickler resolves
differently, the legacy format's five pickles, tar polyglots, and zip archives miniz and zipfile read
differently. Here, without torch, on every interpreter: `ckptkeys inspect --json` names a
code-execution global or refuses the file as ambiguous or unsupported. tests/test_security_torch.py
checks against torch itself that each payload runs as the case says.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Any

import pytest

import ckptkeys
from ckptkeys._cli import _main as _cli
from ckptkeys._read._globalref import GlobalRef
from ckptkeys._read._globals import classify
from ckptkeys._read._pickle import find_class
from ckptkeys._read._torch import legacy_find_class, zip_find_class

from .conftest import FIXTURES
from .security_cases import Case, _call, build_cases, legacy

CASES = build_cases("/nonexistent-canaries")
REFUSALS = ("AmbiguousFileError", "UnsupportedFormatError", "TorchScriptArchiveError")


def inspect_json(
    path: pathlib.Path, capsys: pytest.CaptureFixture[str], command: str = "inspect"
) -> tuple[int, dict[str, Any]]:
    status = _cli.main([command, "--json", str(path)])
    return status, json.loads(capsys.readouterr().out)


def flagged(status: int, document: dict[str, Any]) -> bool:
    """A code-execution global named anywhere in the document, or an explicit refusal."""
    if "error" in document:
        error = document["error"]
        return error["type"] in REFUSALS or any(g["class"] == "code-execution" for g in error.get("globals", ()))
    named = [g for entry in document.get("files", ()) for g in entry.get("globals") or ()]
    return status != 0 and any(g["class"] == "code-execution" for g in named)


@pytest.mark.parametrize("case", [c for c in CASES if c.runs is not False], ids=lambda c: c.name)
def test_payload_is_flagged_or_refused(case: Case, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "file.pt"
    path.write_bytes(case.data)
    status, document = inspect_json(path, capsys)
    assert flagged(status, document), document


@pytest.mark.parametrize("name", ["zip-dotted-global-p4", "legacy-in-storage-keys", "zip-concat", "tar-polyglot"])
def test_payload_in_a_tag_folder_is_an_error(
    name: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tag = tmp_path / "global_step1"
    shutil.copytree(FIXTURES / "z0_fp32_ws1" / "global_step3", tag)
    (tag / "mp_rank_00_model_states.pt").write_bytes(next(c for c in CASES if c.name == name).data)
    status, document = inspect_json(tag, capsys, "validate")
    assert status == 1
    codes = {p["code"] for p in document["problems"] + [p for t in document["tags"] for p in t["problems"]]}
    assert codes & {"code-execution", "ambiguous-file", "unsupported-format"}, codes


def test_refusal_keeps_the_globals_read_before_it(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "file.pt"
    path.write_bytes(next(c for c in CASES if c.name == "legacy-in-magic").data)
    with pytest.raises(ckptkeys.CorruptCheckpointError, match="magic number is the result of a call of os.system") as raised:
        ckptkeys.read(path)
    assert [classify(ref) for ref in raised.value.globals] == ["code-execution"]
    assert raised.value.globals[0].qualname == "os.system"


@pytest.mark.parametrize("name", ["legacy-magic-computed", "legacy-magic-global", "legacy-version-computed"])
def test_a_computed_magic_number_or_version_reads_on_to_the_object_pickle(name: str, tmp_path: pathlib.Path) -> None:
    """torch compares what the call (or global) gives: it may go on, so every pickle is read for its globals."""
    path = tmp_path / "file.pt"
    path.write_bytes(next(c for c in CASES if c.name == name).data)
    with pytest.raises(ckptkeys.CorruptCheckpointError, match="which torch.load computes") as raised:
        ckptkeys.read(path)
    assert GlobalRef("os", "system") in raised.value.globals


def test_a_magic_number_of_another_value_stops_as_torch_does(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "file.pt"
    path.write_bytes(legacy(magic=b"\x80\x02K\x05.", main=b"\x80\x02" + _call("os", "system", "true") + b"."))
    with pytest.raises(ckptkeys.NotACheckpointError, match="no torch magic number") as raised:
        ckptkeys.read(path)
    assert raised.value.globals == ()


def test_every_legacy_pickle_is_read(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "file.pt"
    path.write_bytes(next(c for c in CASES if c.name == "legacy-in-sys-info").data)
    assert GlobalRef("os", "system") in ckptkeys.read(path).globals


def test_names_resolve_as_c_pickle() -> None:
    assert find_class("commands", "getoutput", 2) == GlobalRef("subprocess", "getoutput", ("commands", "getoutput"))
    assert find_class("commands", "getoutput", 3) == GlobalRef("commands", "getoutput")
    assert find_class("__builtin__", "set", 0) == GlobalRef("builtins", "set", ("__builtin__", "set"))
    assert zip_find_class("torch.tensor", "_rebuild_from_type_v2", 2).module == "torch._tensor"
    assert legacy_find_class("torch.tensor", "x", 2) == GlobalRef("torch.tensor", "x")
    assert zip_find_class("os", "FloatStorage", 2) == GlobalRef("torch", "FloatStorage", ("os", "FloatStorage"))


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (GlobalRef("torch._utils", "_rebuild_tensor_v2"), "allowed"),
        (GlobalRef("builtins", "set", ("__builtin__", "set")), "allowed"),
        (GlobalRef("collections", "OrderedDict"), "allowed"),
        (GlobalRef("torch", "bfloat16"), "allowed"),
        (GlobalRef("torch", "os.system"), "code-execution"),
        (GlobalRef("torch", "_utils._rebuild_tensor_v2"), "code-execution"),  # dotted: walked, never allowed
        (GlobalRef("torch._utils", "_import_dotted_name"), "code-execution"),
        # TorchScript reached from a pickle (the red team's second round): compiles and runs code
        (GlobalRef("torch._C", "import_ir_module_from_buffer"), "code-execution"),
        (GlobalRef("torch._C", "CompilationUnit"), "code-execution"),
        (GlobalRef("torch.jit._serialization", "_load_for_lite_interpreter"), "code-execution"),
        (GlobalRef("torch.fx.graph_module", "reduce_graph_module"), "code-execution"),
        # the second red team of issue 19: a shell command, a file created, TorchScript loaded from bytes
        (GlobalRef("pydoc", "pipepager"), "code-execution"),
        (GlobalRef("logging", "FileHandler"), "code-execution"),
        (GlobalRef("torch.distributed.nn.api.remote_module", "_recursive_script_module_receiver"), "code-execution"),
        (GlobalRef("torch", "save"), "code-execution"),
        (GlobalRef("torch.storage", "_load_from_bytes"), "code-execution"),
        (GlobalRef("subprocess", "getoutput", ("commands", "getoutput")), "code-execution"),
        (GlobalRef("pickle", "loads", ("cPickle", "loads")), "code-execution"),
        (GlobalRef("torch", "xyz"), "refused"),  # any lower-case name under torch is no longer "allowed"
        (GlobalRef("torch._utils", "_rebuild_xla_tensor"), "refused"),
        (GlobalRef("torch", "FloatStorage", ("os", "FloatStorage")), "refused"),  # weights_only sees os.*
        (GlobalRef("deepspeed.runtime.zero.config", "ZeroStageEnum"), "refused"),
    ],
)
def test_classification(ref: GlobalRef, expected: str) -> None:
    assert classify(ref) == expected


@pytest.mark.parametrize(
    "path", sorted((FIXTURES.parent / "fuzz_regressions").glob("differential_*")), ids=lambda p: p.name
)
def test_differential_findings_keep_their_globals(path: pathlib.Path) -> None:
    # Inputs the differential fuzz target found: torch resolved globals while ckptkeys refused
    # the file unread. Now ckptkeys reads what torch reads (a STOP inside a MARK returns the top
    # of the stack, as in C pickle; a ZIP64 record without its signature is ignored, as miniz
    # does), refuses after that pickle, with its globals, or refuses loudly as ambiguous.
    try:
        refs = ckptkeys.read(path).globals
    except ckptkeys.AmbiguousFileError:
        return
    except ckptkeys.CorruptCheckpointError as error:
        refs = error.globals
    assert refs


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\x02(K\x01K\x02.",  # STOP inside an open MARK: the top of the stack
        b"\x80\x02K\x04(u.",  # SETITEMS with an empty MARK on an int: nothing happens
        b"\x80\x02K\x04(e.",  # APPENDS likewise
        b"\x80\x04K\x04(\x90.",  # ADDITEMS likewise
        b"\x80\x02]K\x01aK\x00K\x07s.",  # SETITEM on a list: an index
        b"\x80\x05C\x02ab\x98.",  # READONLY_BUFFER on bytes
    ],
)
def test_machine_agrees_with_c_pickle(data: bytes) -> None:
    # Where the machine was stricter than C pickle, a file could hide globals after the point
    # where ckptkeys stopped and torch went on (differential fuzzing found these).
    import pickle

    from ckptkeys._read._pickle import unpickle

    assert unpickle(data).value == pickle.loads(data)


def test_legacy_module_persistent_id_is_read_on(tmp_path: pathlib.Path) -> None:
    # torch < 1.6 saved whole nn.Modules with ("module", cls, file, source) persistent ids; torch.load
    # returns the class and goes on, so the reader must too and see what follows.
    from .security_cases import legacy

    main = b"\x80\x02(Vmodule\ncmodels\nNet\nVmodels.py\nVsource\ntQcos\nsystem\n(Vtrue\ntR\x86."
    path = tmp_path / "module.pt"
    path.write_bytes(legacy(main=main))
    checkpoint = ckptkeys.read(path)
    assert [ref.qualname for ref in checkpoint.globals] == ["models.Net", "os.system"]
    assert checkpoint.data[0] == GlobalRef("models", "Net")


def _named(folder: pathlib.Path) -> set[str]:
    """Every global the checkpoint files under ``folder`` name that torch's weights-only load refuses."""
    from ckptkeys._read._torch import storage_dtype

    names = set()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in (".pt", ".bin", ".pth", ".ckpt"):
            try:
                refs = ckptkeys.read(path).globals
            except ckptkeys.ReadError as error:
                refs = error.globals
            names |= {ref.qualname for ref in refs if classify(ref) != "allowed" and not storage_dtype(ref)}
    return names


def test_deepspeed_data_globals_are_exactly_what_deepspeed_saves() -> None:
    """The classes export trusts beside torch's allow-list: those DeepSpeed 0.19.8 pickles, no more."""
    from ckptkeys._read._globals import DEEPSPEED_DATA_GLOBALS

    assert _named(FIXTURES) == DEEPSPEED_DATA_GLOBALS


def test_framework_data_globals_are_what_the_frameworks_save() -> None:
    from ckptkeys._read._globals import DEEPSPEED_DATA_GLOBALS, FRAMEWORK_DATA_GLOBALS

    seen = _named(FIXTURES.parent / "clients") - DEEPSPEED_DATA_GLOBALS
    assert seen <= FRAMEWORK_DATA_GLOBALS
    # numpy renamed numpy.core to numpy._core in 2.0: both spellings are numpy's array rebuild
    assert FRAMEWORK_DATA_GLOBALS - seen <= {"numpy.core.multiarray._reconstruct"}


@pytest.mark.parametrize(
    ("ref", "codes"),
    [
        (GlobalRef("builtins", "int"), ["unknown-global"]),
        (GlobalRef("torch.nn.init", "zeros_"), ["unknown-global"]),
        (GlobalRef("os", "system"), ["code-execution"]),
        (GlobalRef("deepspeed.runtime.zero.config", "ZeroStageEnum"), []),
        (GlobalRef("transformers.training_args", "TrainingArguments"), []),
        (GlobalRef("torch", "UntypedStorage"), []),
        (GlobalRef("torch._utils", "_rebuild_tensor_v2"), []),
    ],
)
def test_a_refused_global_nobody_saves_is_a_warning(ref: GlobalRef, codes: list[str]) -> None:
    from ckptkeys._check._security import globals_problems

    problems = globals_problems("file.pt", [ref])
    assert [p.code for p in problems] == codes
    if codes == ["unknown-global"]:
        assert problems[0].severity == ckptkeys.Severity.WARNING
        assert ref.qualname in problems[0].message
