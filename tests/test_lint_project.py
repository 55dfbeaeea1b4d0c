"""ckptkeys lint, project mode: a helper of one module that names or loads a DeepSpeed checkpoint
file is evidence where another module of the same project calls it (issue 22, point 1).

The imports are resolved statically (nothing is imported or run): absolute and relative ones,
``import a.b as U``, re-exports through a package's ``__init__``, star imports, ``src/`` layouts,
packages without ``__init__.py``, a script's own folder; cycles, missing modules and relative
imports beyond the root resolve to nothing and never fail.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
import warnings

import pytest

from ckptkeys._cli._main import main
from ckptkeys.lint import Finding, lint_project, lint_source
from ckptkeys.lint._project import _Project, project_root

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Megatron-v1's way (GLM, CodeGeeX): the DeepSpeed file name built in megatron/checkpointing.py
CHECKPOINTING = """\
import os


def get_checkpoint_name(checkpoints_path, iteration, release=False, mp_rank=None):
    directory = "release" if release else "iter_{:07d}".format(iteration)
    return os.path.join(checkpoints_path, directory, "mp_rank_{:02d}_model_states.pt".format(mp_rank or 0))
"""
# the user: a tool of the same project that loads that file
CONVERT = """\
import torch
from megatron.checkpointing import get_checkpoint_name


def main(d, it, model):
    sd = torch.load(get_checkpoint_name(d, it))
    model.load_state_dict(sd["module"])
"""


def project(files: dict[str, str], **options: object) -> list[Finding]:
    return lint_project({path: textwrap.dedent(text) for path, text in files.items()}, **options)  # type: ignore[arg-type]


def keys(findings: list[Finding], path: str) -> list[str | None]:
    return [f.value for f in findings if f.path == path and f.code.startswith("CK1")]


def test_a_helper_imported_from_another_module_is_evidence_where_it_is_called() -> None:
    files = {"megatron/__init__.py": "", "megatron/checkpointing.py": CHECKPOINTING, "tools/convert.py": CONVERT}
    assert lint_source(CONVERT, "tools/convert.py") == []  # alone, 'module' is a common word
    found = [f for f in project(files) if f.path == "tools/convert.py"]
    assert [(f.line, f.code, f.value) for f in found] == [(7, "CK101", "module")]
    assert found[0].evidence == (
        "a common word, in a function that loads the file named by get_checkpoint_name"
        " (megatron/checkpointing.py:4), a DeepSpeed checkpoint file name"
    )
    assert {f.path for f in project(files)} <= set(files)


@pytest.mark.parametrize(
    ("files", "user"),
    [
        # a relative import in a package
        (
            {
                "pkg/__init__.py": "",
                "pkg/ckpt_utils.py": CHECKPOINTING,
                "pkg/convert.py": CONVERT.replace("megatron.checkpointing", ".ckpt_utils"),
            },
            "pkg/convert.py",
        ),
        # two dots, from a subpackage
        (
            {
                "pkg/__init__.py": "",
                "pkg/ckpt_utils.py": CHECKPOINTING,
                "pkg/sub/__init__.py": "",
                "pkg/sub/convert.py": CONVERT.replace("megatron.checkpointing", "..ckpt_utils"),
            },
            "pkg/sub/convert.py",
        ),
        # import a.b as U; U.f()
        (
            {
                "tools/__init__.py": "",
                "tools/utils.py": CHECKPOINTING,
                "tools/convert.py": CONVERT.replace(
                    "from megatron.checkpointing import get_checkpoint_name", "import tools.utils as U"
                ).replace("get_checkpoint_name(", "U.get_checkpoint_name("),
            },
            "tools/convert.py",
        ),
        # import a.b; a.b.f()
        (
            {
                "megatron/__init__.py": "",
                "megatron/checkpointing.py": CHECKPOINTING,
                "convert.py": CONVERT.replace(
                    "from megatron.checkpointing import get_checkpoint_name", "import megatron.checkpointing"
                ).replace("get_checkpoint_name(", "megatron.checkpointing.get_checkpoint_name("),
            },
            "convert.py",
        ),
        # from package import module; module.f()
        (
            {
                "megatron/checkpointing.py": CHECKPOINTING,  # no __init__.py: a namespace package
                "convert.py": CONVERT.replace(
                    "from megatron.checkpointing import get_checkpoint_name", "from megatron import checkpointing"
                ).replace("get_checkpoint_name(", "checkpointing.get_checkpoint_name("),
            },
            "convert.py",
        ),
        # re-exported through the package's __init__
        (
            {
                "megatron/__init__.py": "from .checkpointing import get_checkpoint_name\n",
                "megatron/checkpointing.py": CHECKPOINTING,
                "tools/convert.py": CONVERT.replace("megatron.checkpointing", "megatron"),
            },
            "tools/convert.py",
        ),
        # a star import, through a package's __init__
        (
            {
                "megatron/__init__.py": "from .checkpointing import *\n",
                "megatron/checkpointing.py": CHECKPOINTING,
                "tools/convert.py": CONVERT.replace(
                    "from megatron.checkpointing import get_checkpoint_name", "from megatron import *"
                ),
            },
            "tools/convert.py",
        ),
        # a src/ layout
        (
            {
                "src/pkg/__init__.py": "",
                "src/pkg/ckpt.py": CHECKPOINTING,
                "scripts/convert.py": CONVERT.replace("megatron.checkpointing", "pkg.ckpt"),
            },
            "scripts/convert.py",
        ),
        # a script beside its helper: its own folder is on sys.path
        (
            {"tools/utils.py": CHECKPOINTING, "tools/convert.py": CONVERT.replace("megatron.checkpointing", "utils")},
            "tools/convert.py",
        ),
        # a helper that calls DeepSpeed's name function
        (
            {
                "ds_utils.py": "from deepspeed.utils import get_model_ckpt_name_for_rank as n\n\n"
                "def get_checkpoint_name(d, it):\n    return get_model_ckpt_name_for_rank(d, '00')\n",
                "convert.py": CONVERT.replace("megatron.checkpointing", "ds_utils"),
            },
            "convert.py",
        ),
        # a helper that returns a path built so, through a local name
        (
            {
                "ckpt.py": "import os\n\ndef get_checkpoint_name(d, it):\n"
                "    name = os.path.join(d, f'global_step{it}', 'mp_rank_00_model_states.pt')\n    return name\n",
                "convert.py": CONVERT.replace("megatron.checkpointing", "ckpt"),
            },
            "convert.py",
        ),
        # a helper defined in an `if` block, decorated
        (
            {
                "ckpt.py": "import os, functools\n\nif os.name:\n    @functools.cache\n"
                "    def get_checkpoint_name(d, it):\n"
                "        return os.path.join(d, 'mp_rank_00_model_states.pt')\n",
                "convert.py": CONVERT.replace("megatron.checkpointing", "ckpt"),
            },
            "convert.py",
        ),
        # a helper that calls a helper of a third module
        (
            {
                "a.py": CHECKPOINTING,
                "b.py": "from a import get_checkpoint_name as g\n\n"
                "def get_checkpoint_name(d, it):\n    return g(d, it)\n",
                "convert.py": CONVERT.replace("megatron.checkpointing", "b"),
            },
            "convert.py",
        ),
        # a function of the user's own file that calls the imported helper
        (
            {
                "megatron/checkpointing.py": CHECKPOINTING,
                "convert.py": "import torch\nfrom megatron.checkpointing import get_checkpoint_name\n\n"
                "def path(d):\n    return get_checkpoint_name(d, 1)\n\n"
                "def main(d, model):\n    sd = torch.load(path(d))\n    model.load_state_dict(sd['module'])\n",
            },
            "convert.py",
        ),
    ],
    ids=[
        "relative",
        "relative-two-dots",
        "import-as",
        "import-dotted",
        "namespace-package",
        "re-export",
        "star",
        "src-layout",
        "script-folder",
        "deepspeed-name-function",
        "local-name",
        "in-a-block",
        "transitive",
        "own-function",
    ],
)
def test_the_imports_resolved(files: dict[str, str], user: str) -> None:
    assert keys(project(files), user) == ["module"]
    assert keys(project({user: files[user]}), user) == []  # the helper's module not given: nothing


def test_a_helper_that_loads_the_file_and_returns_it() -> None:
    loader = (
        "import torch\nfrom .checkpointing import get_checkpoint_name\n\n"
        "def load_ds_sd(d, it):\n    sd = torch.load(get_checkpoint_name(d, it), map_location='cpu')\n    return sd\n\n"
        "def load_module(d):\n    return torch.load(get_checkpoint_name(d, 1))['module']\n"
    )
    user = (
        "from megatron.loading import load_ds_sd\n\n"
        "def main(d, model):\n    sd = load_ds_sd(d, 3)\n    model.load_state_dict(sd['module'])\n"
    )
    files = {"megatron/__init__.py": "", "megatron/checkpointing.py": CHECKPOINTING, "megatron/loading.py": loader}
    found = [f for f in project({**files, "main.py": user}) if f.path == "main.py"]
    assert [f.value for f in found] == ["module"]
    assert found[0].evidence.endswith(
        "calls load_ds_sd() (megatron/loading.py:4), which returns a loaded DeepSpeed checkpoint file"
    )


@pytest.mark.parametrize(
    "helper",
    [
        # Megatron's own file name: not DeepSpeed's
        (
            "import os\n\ndef get_checkpoint_name(d, it):\n"
            "    return os.path.join(d, 'mp_rank_{:02d}'.format(0), 'model_optim_rng.pt')\n"
        ),
        # names the file but returns nothing (it saves)
        (
            "import os, torch\n\ndef get_checkpoint_name(d, it):\n"
            "    torch.save({}, os.path.join(d, 'mp_rank_00_model_states.pt'))\n"
        ),
        # names the file, returns something else
        (
            "import os\n\ndef get_checkpoint_name(d, it):\n"
            "    exists = os.path.exists(os.path.join(d, 'mp_rank_00_model_states.pt'))\n    return it\n"
        ),
        # a function of that name elsewhere, not the one imported
        "def other():\n    return 'mp_rank_00_model_states.pt'\n\ndef get_checkpoint_name(d, it):\n    return d\n",
    ],
)
def test_what_is_no_helper(helper: str) -> None:
    files = {"megatron/__init__.py": "", "megatron/checkpointing.py": helper, "tools/convert.py": CONVERT}
    assert keys(project(files), "tools/convert.py") == []


@pytest.mark.parametrize(
    "files",
    [
        # a cycle of imports and of calls
        {
            "a.py": "from b import g\n\ndef f(d):\n    return g(d)\n",
            "b.py": "from a import f\n\ndef g(d):\n    return f(d)\n",
            "c.py": "from a import f\n\ndef main(d):\n    return f(d)['module']\n",
        },
        # a module that re-exports itself, a star import of itself
        {
            "a.py": "from a import *\nfrom a import f\n",
            "c.py": "from a import f\n\ndef main(d):\n    return f(d)['module']\n",
        },
        # relative imports beyond the root, missing modules, a syntax error
        {
            "a.py": "from ... import f\nfrom .. import g\nfrom .missing import h\n"
            "from nowhere import k\nimport x.y.z as w\n",
            "b.py": "def f(:\n",
            "c.py": "from a import f, g, h, k, w\nfrom b import f as bf\n\ndef main(d):\n"
            "    return f(d)['module'], g(d)['module'], h()['module'], k()['module'],"
            " w.q()['module'], bf()['module']\n",
        },
    ],
    ids=["cycle", "self", "beyond-root-missing-broken"],
)
def test_what_cannot_be_resolved_is_nothing(files: dict[str, str]) -> None:
    found = project(files)
    assert keys(found, "c.py") == []
    assert all(f.code == "CK001" for f in found if f.path == "b.py")


def test_a_chain_deeper_than_the_stack_is_left_unresolved() -> None:
    files = {f"m{n}.py": f"from m{n + 1} import f as g\n\ndef f(d):\n    return g(d)\n" for n in range(1500)}
    files["m1500.py"] = CHECKPOINTING.replace("get_checkpoint_name", "f")
    files["user.py"] = "from m0 import f\n\ndef main(d):\n    return f(d)['module']\n"
    assert keys(project(files), "user.py") == []
    files["user.py"] = files["user.py"].replace("m0", "m1490")  # a short chain: found
    assert keys(project(files), "user.py") == ["module"]


def test_select_and_paths() -> None:
    files = {"megatron/__init__.py": "", "megatron/checkpointing.py": CHECKPOINTING, "tools/convert.py": CONVERT}
    assert [f.code for f in project(files, select=["CK1"])] == ["CK101"]
    assert [f.code for f in project(files, ignore=["CK1"])] == ["CK201"]
    # absolute paths: named from the folder above the packages
    here = os.path.abspath("p")
    absolute = {os.path.join(here, path): text for path, text in files.items()}
    found = project(absolute)
    assert [(f.path, f.value) for f in found if f.code == "CK101"] == [
        (os.path.join(here, "tools/convert.py"), "module")
    ]
    # a root given: paths relative to it
    assert keys(project(files, root=here), "tools/convert.py") == ["module"]


def write(root: pathlib.Path, files: dict[str, str]) -> None:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")


def test_imports_read_from_disk_once(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        tmp_path,
        {
            "megatron/__init__.py": "from .checkpointing import get_checkpoint_name\n",
            "megatron/checkpointing.py": CHECKPOINTING,
            "tools/convert.py": CONVERT,
        },
    )
    (tmp_path / "megatron/broken.py").write_bytes(b"\xff\xfe\x00 def f(:")  # not UTF-8: skipped
    two = CONVERT + "from megatron.broken import f\nfrom megatron import get_checkpoint_name as g\n\n"
    two += "def other(d, model):\n    model.load_state_dict(torch.load(g(d, 1))['module'])\n\n"
    two += "def third():\n    return f()['module']\n"
    reads: list[str] = []
    original = _Project.read

    def counted(self: _Project, path: str) -> object:
        reads.append(os.path.relpath(path, tmp_path))
        return original(self, path)

    monkeypatch.setattr(_Project, "read", counted)
    sources = {"tools/convert.py": two}
    assert keys(lint_project(sources, root=tmp_path), "tools/convert.py") == []  # not read without read_imports
    assert reads == []
    found = lint_project(sources, root=tmp_path, read_imports=True)
    assert keys(found, "tools/convert.py") == ["module", "module"]
    assert sorted(reads) == sorted(
        os.path.normpath(p) for p in ("megatron/__init__.py", "megatron/checkpointing.py", "megatron/broken.py")
    )


def test_project_root(tmp_path: pathlib.Path) -> None:
    write(
        tmp_path,
        {"proj/pkg/__init__.py": "", "proj/pkg/sub/__init__.py": "", "proj/pkg/sub/m.py": "", "proj/x/y.py": ""},
    )
    assert project_root(str(tmp_path / "proj/pkg/sub/m.py")) in (str(tmp_path / "proj"), str(tmp_path.parent))
    (tmp_path / "proj/pyproject.toml").write_text("", encoding="utf-8")
    assert project_root(str(tmp_path / "proj/pkg/sub/m.py")) == str(tmp_path / "proj")
    assert project_root(str(tmp_path / "proj/x/y.py")) == str(tmp_path / "proj")
    assert project_root(str(tmp_path / "proj")) == str(tmp_path / "proj")


@pytest.fixture
def on_disk(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    write(
        tmp_path,
        {
            "pyproject.toml": "[project]\nname = 'p'\n",
            "megatron/__init__.py": "",
            "megatron/checkpointing.py": CHECKPOINTING,
            "tools/convert.py": CONVERT,
        },
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_command_lints_its_files_as_one_project(on_disk: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["."], ["tools/convert.py", "megatron/checkpointing.py"], ["tools/convert.py"]):
        assert main(["lint", "--select", "CK1", *args]) == 1
        out = capsys.readouterr().out.splitlines()
        assert out == [
            f"{os.path.normpath('tools/convert.py')}:7:30: CK101 'module' is a checkpoint key: use ModuleKeys.MODULE"
        ]
    # from a subfolder, the file named alone (as pre-commit names the changed files)
    os.chdir(on_disk / "tools")
    assert main(["lint", "--select", "CK1", "--output-format", "full", "convert.py"]) == 1
    assert "(megatron/checkpointing.py:4)" in capsys.readouterr().out


def test_standard_input_resolves_as_the_file_it_names(on_disk: pathlib.Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run(
        [sys.executable, "-m", "ckptkeys", "lint", "-", "--stdin-filename", "tools/convert.py", "--select", "CK1"],
        cwd=on_disk,
        input=CONVERT.encode(),
        capture_output=True,
        check=False,
        env=env,
    )
    assert run.returncode == 1, run.stderr
    assert run.stdout.decode().splitlines() == [
        "tools/convert.py:7:30: CK101 'module' is a checkpoint key: use ModuleKeys.MODULE"
    ]


def test_files_of_two_projects_in_one_run(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    # each file resolved in its own project: `megatron` is a helper's package in one, absent in the other
    files = {"megatron/__init__.py": "", "megatron/checkpointing.py": CHECKPOINTING, "tools/convert.py": CONVERT}
    write(tmp_path / "one", {"setup.py": "", **files})
    write(tmp_path / "two", {"setup.py": "", "tools/convert.py": CONVERT})
    one, two = tmp_path / "one/tools/convert.py", tmp_path / "two/tools/convert.py"
    assert main(["lint", "--select", "CK1", str(two), str(one)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith(f"{one}:7:30: CK101 ")


def test_pythons_compile_warnings_are_not_given() -> None:
    # "\d" in a plain string: a SyntaxWarning as Python compiles it (3.12+), an error under -W error
    helper = CHECKPOINTING + '\n\ndef pattern():\n    return "\\d+"\n'
    files = {"megatron/checkpointing.py": helper, "tools/convert.py": CONVERT + 'PATTERN = "\\d"\n'}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert keys(project(files), "tools/convert.py") == ["module"]


# -- one recogniser: a helper in another module is read by the rules of a helper in the same one --

_HELPERS = {
    "a file name from a module-level constant": (
        """\
        import os
        import torch
        MODEL_FILE = "mp_rank_00_model_states.pt"
        def load_states(d):
            return torch.load(os.path.join(d, MODEL_FILE))
        """,
        """\
        def restore(model, d):
            sd = load_states(d)
            model.load_state_dict(sd["module"])
        """,
    ),
    "a file name from another helper of its module": (
        """\
        import os
        import torch
        def states_file(d):
            return os.path.join(d, "mp_rank_00_model_states.pt")
        def load_states(d):
            path = states_file(d)
            return torch.load(path, map_location="cpu")
        """,
        """\
        def restore(model, d):
            model.load_state_dict(load_states(d)["module"])
        """,
    ),
    "a glob of DeepSpeed file names, loaded by the user": (
        """\
        import glob
        import os
        def optim_files(d):
            return sorted(glob.glob(os.path.join(d, "*_optim_states.pt")))
        """,
        """\
        import torch
        def shapes(d):
            for f in optim_files(d):
                sd = torch.load(f)
                print(sd["optimizer_state_dict"])
        """,
    ),
    "the dict level of the file it loads": (
        """\
        import os
        import torch
        def load_optim(d):
            return torch.load(os.path.join(d, "zero_pp_rank_0_mp_rank_00_optim_states.pt"))
        """,
        """\
        def overflow(d):
            optim = load_optim(d)
            return optim["optimizer_state_dict"]
        """,
    ),
    "a part of the file it loads": (
        """\
        import os
        import torch
        def load_module(d):
            return torch.load(os.path.join(d, "mp_rank_00_model_states.pt"))["module"]
        """,
        """\
        def restore(model, d):
            sd = load_module(d)
            model.load_state_dict(sd)
            return sd["module"]
        """,
    ),
}


def _seen(findings: list[Finding]) -> list[tuple[str, str | None, tuple[str, ...], str | None]]:
    return [(f.code, f.value, f.candidates, f.replacement) for f in findings if f.code.startswith("CK1")]


@pytest.mark.parametrize(("helper", "user"), list(_HELPERS.values()), ids=list(_HELPERS))
def test_a_helper_of_another_module_is_read_as_one_of_the_same_module(helper: str, user: str) -> None:
    helper, user = textwrap.dedent(helper), textwrap.dedent(user)
    name = next(line.split("(")[0][4:] for line in reversed(helper.splitlines()) if line.startswith("def "))
    shift = len(helper.splitlines())
    same = [f for f in lint_source(helper + user, "tools/convert.py") if f.line > shift]  # the user's
    imported = f"from pkg.ckpt import {name}\n"
    two = project({"pkg/__init__.py": "", "pkg/ckpt.py": helper, "tools/convert.py": imported + user})
    users = [f for f in two if f.path == "tools/convert.py"]
    assert _seen(same)  # found in one module
    assert _seen(users) == _seen(same)  # and in two: the same keys, groups and fixes
    assert [f.line - 1 for f in users] == [f.line - shift for f in same]
    # alone, the user's file says less: no DeepSpeed file, or not which one (its dict level)
    assert _seen(lint_source(imported + user, "tools/convert.py")) != _seen(users)


def test_lint_project_leaves_the_garbage_collector_as_it_found_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The collector is paused while the trees are kept, and given back as it was: on, off, or after an error."""
    import gc

    from ckptkeys.lint import _project

    sources = {"a.py": "def f(sd):\n    return sd['param_shapes']\n"}
    assert gc.isenabled()
    assert [f.code for f in lint_project(sources)] == ["CK101"]
    assert gc.isenabled()
    gc.disable()
    try:
        lint_project(sources)
        assert not gc.isenabled()
    finally:
        gc.enable()

    def fails(*args: object) -> list[object]:
        assert not gc.isenabled()  # paused during the run
        raise RuntimeError("boom")

    monkeypatch.setattr(_project, "_lint_all", fails)
    with pytest.raises(RuntimeError):
        lint_project(sources)
    assert gc.isenabled()
