"""ckptkeys lint, project mode: a parameter takes the DeepSpeed paths (and loaded DeepSpeed files)
that calls in the project's other modules pass it (issue 22: keys on the result of ``torch.load``
of a path built from DeepSpeed names wherever that path came from; the evidence is outside the
function).

Written as pairs: the same code in one module (the module's own calls give the parameter) and
split over two (a call of the run's other module gives it), each with the same finding; then what
is no evidence.
"""

from __future__ import annotations

import os
import pathlib
import textwrap

import pytest

from ckptkeys._cli._main import main
from ckptkeys.lint import Finding, lint_project, lint_source

# the callee: loads whatever path it is given
UTILS = """\
import torch


def load_weights(path):
    sd = torch.load(path, map_location="cpu")
    return sd["module"]
"""
# the caller: passes a path built from a DeepSpeed file name
TRAIN = """\
import os
from utils import load_weights


def main(d):
    return load_weights(os.path.join(d, "mp_rank_00_model_states.pt"))
"""


def project(files: dict[str, str]) -> list[Finding]:
    return lint_project({path: textwrap.dedent(text) for path, text in files.items()})


def keys(findings: list[Finding], path: str) -> list[tuple[int, str | None]]:
    return [(f.line, f.value) for f in findings if f.path == path and f.code.startswith("CK1")]


def one_module(callee: str, caller: str) -> str:
    """The callee and the caller as one module (the caller's imports of the callee's module dropped)."""
    kept = [line for line in caller.splitlines() if not line.startswith(("from utils", "import utils"))]
    return callee + "\n\n" + "\n".join(kept).replace("utils.load_weights(", "load_weights(") + "\n"


@pytest.mark.parametrize(
    "caller",
    [
        TRAIN,
        TRAIN.replace("load_weights(os.path", "load_weights(path=os.path"),  # a keyword argument
        (  # called through its module
            "import os\nimport utils\n\n\ndef main(d):\n"
            "    return utils.load_weights(os.path.join(d, 'mp_rank_00_model_states.pt'))\n"
        ),
        (  # a glob's files, one by one
            "import glob\nfrom utils import load_weights\n\n\ndef main(d):\n"
            "    for f in sorted(glob.glob(d + '/*_model_states.pt')):\n        load_weights(f)\n"
        ),
    ],
)
def test_a_path_another_module_passes(caller: str) -> None:
    assert lint_source(UTILS, "utils.py") == []  # alone, 'module' is a common word
    alone = keys(lint_source(one_module(UTILS, caller), "one.py"), "one.py")
    assert alone == [(6, "module")]
    found = [f for f in project({"utils.py": UTILS, "train.py": caller}) if f.path == "utils.py"]
    assert [(f.line, f.value) for f in found] == alone
    line = next(n for n, text in enumerate(caller.splitlines(), 1) if "load_weights(" in text and "import" not in text)
    assert found[0].evidence.endswith(f", a path train.py:{line} passes")
    assert "DeepSpeed file" in found[0].evidence


def test_a_constant_imported_and_passed() -> None:
    common = 'CKPT_NAME = "mp_rank_00_model_states.pt"\n'
    caller = "import os\nfrom common import CKPT_NAME\nfrom utils import load_weights\n\n\ndef main(d):\n"
    caller += "    return load_weights(os.path.join(d, CKPT_NAME))\n"
    same = common + "\n" + one_module(UTILS, caller.replace("from common import CKPT_NAME\n", ""))
    assert keys(lint_source(same, "one.py"), "one.py") == [(8, "module")]
    found = project({"common.py": common, "utils.py": UTILS, "train.py": caller})
    assert keys(found, "utils.py") == [(6, "module")]
    assert (
        keys(project({"common.py": "CKPT_NAME = 'model.pt'\n", "utils.py": UTILS, "train.py": caller}), "utils.py")
        == []
    )


def test_a_path_passed_on_through_a_third_module() -> None:
    """The evidence names the call that passes the callee the path (which was passed it in turn)."""
    middle = "from utils import load_weights\n\n\ndef restore(model, p):\n    model.load_state_dict(load_weights(p))\n"
    caller = "import os\nfrom middle import restore\n\n\ndef main(model, d):\n"
    caller += "    restore(model, os.path.join(d, 'global_step1', 'mp_rank_00_model_states.pt'))\n"
    found = project({"utils.py": UTILS, "middle.py": middle, "train.py": caller})
    assert keys(found, "utils.py") == [(6, "module")]
    assert next(f for f in found if f.path == "utils.py").evidence.endswith(", a path middle.py:5 passes")


def test_a_loaded_file_passed() -> None:
    callee = "def restore(model, sd):\n    model.load_state_dict(sd['module'])\n"
    caller = "import os, torch\nfrom utils import restore\n\n\ndef main(model, d):\n"
    caller += "    restore(model, torch.load(os.path.join(d, 'mp_rank_00_model_states.pt')))\n"
    assert keys(lint_source(one_module(callee, caller.replace("utils", "x")), "one.py"), "one.py") == [(2, "module")]
    assert keys(project({"utils.py": callee, "train.py": caller}), "utils.py") == [(2, "module")]


@pytest.mark.parametrize(
    "files",
    [
        # a caller passing another file's path
        {"train.py": TRAIN.replace("mp_rank_00_model_states.pt", "pytorch_model.bin")},
        # a function of the same name of another module: the call resolves there
        {"train.py": TRAIN.replace("from utils", "from other"), "other.py": "def load_weights(p):\n    return p\n"},
        # the DeepSpeed path passed as another parameter
        {"train.py": TRAIN.replace("load_weights(os.path", "load_weights('w.pt', other=os.path")},
        # a method of the same name on some object
        {"train.py": TRAIN.replace("load_weights(os.path", "self.load_weights(os.path")},
        # the caller not among the files of the run: callers are looked for only there
        {},
    ],
)
def test_what_is_no_path_passed(files: dict[str, str]) -> None:
    assert keys(project({"utils.py": UTILS, **files}), "utils.py") == []


def test_a_parameter_given_both_a_deepspeed_path_and_another() -> None:
    """As in one module, where the first call that passes a DeepSpeed path decides: a parameter
    one caller passes a DeepSpeed file is one, whatever other callers pass."""
    other = "from utils import load_weights\n\n\ndef export(d):\n    return load_weights(d + '/pytorch_model.bin')\n"
    found = project({"utils.py": UTILS, "export.py": other, "train.py": TRAIN})
    assert keys(found, "utils.py") == [(6, "module")]
    assert keys(project({"utils.py": UTILS, "export.py": other}), "utils.py") == []


def test_a_cycle_of_parameters_passed_is_nothing() -> None:
    a = "from b import g\n\n\ndef f(p):\n    return g(p)['module']\n"
    b = "import torch\nfrom a import f\n\n\ndef g(p):\n    f(p)\n    return torch.load(p)\n"
    assert keys(project({"a.py": a, "b.py": b}), "a.py") == []


def test_the_command_finds_the_callers_among_its_files(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ckptkeys lint .`` and both files named: the caller is found; the callee named alone (as
    pre-commit names one changed file): not, since callers are looked for among the files of the run."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'p'\n", encoding="utf-8")
    (tmp_path / "utils.py").write_text(UTILS, encoding="utf-8")
    (tmp_path / "train.py").write_text(TRAIN, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    expected = f"{os.path.normpath('utils.py')}:6:15: CK101 'module' is a checkpoint key: use ModuleKeys.MODULE"
    for args in (["."], ["utils.py", "train.py"]):
        assert main(["lint", "--select", "CK1", *args]) == 1
        assert capsys.readouterr().out.splitlines() == [expected]
    assert main(["lint", "--select", "CK1", "utils.py"]) == 0
    assert capsys.readouterr().out == ""
