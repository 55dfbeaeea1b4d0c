"""ckptkeys lint: names and paths read as issue 22 asks.

Globs and ``os.path.join``/``pathlib`` pieces are DeepSpeed file names. A file name or path is
followed through the module to the ``torch.load`` that loads it, and the keys read from what it
returned are judged by that path (whatever the expression mentions: ``args``, ``config``); the
member suggested is the one of the dict level the key is read at. A module-level config display
takes no evidence from a file named elsewhere, and ``global_step_N`` is another framework's folder.
"""

from __future__ import annotations

import ast
import textwrap

import pytest

from ckptkeys.lint import Finding, fix_source, lint_source
from ckptkeys.lint._paths import Origin, returned_origin
from ckptkeys.naming import FileKind


def lint(code: str) -> list[Finding]:
    return lint_source(textwrap.dedent(code), "example.py")


def spots(code: str) -> list[tuple[str, str | None]]:
    return [(f.code, f.value) for f in lint(code)]


def fixed(code: str) -> str:
    source = textwrap.dedent(code)
    return fix_source(source, lint_source(source, "example.py"))[0]


# -- globs and path pieces ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "value", "where"),
    [
        (
            'files = glob.glob(os.path.join(folder, tag, "mp_rank_*_model_states.pt"))\n',
            "mp_rank_*_model_states.pt",
            "given to glob()",
        ),
        (
            'path = pathlib.Path(d) / tag / "zero_pp_rank_*_optim_states.pt"\n',
            "zero_pp_rank_*_optim_states.pt",
            "a piece of a path built with /",
        ),
        (
            'pattern = os.path.join(d, "layer_*-model_states.pt")\n',
            "layer_*-model_states.pt",
            "a piece of join()",
        ),
    ],
)
def test_a_glob_of_ds_names_as_a_path_piece_is_matching_by_hand(code: str, value: str, where: str) -> None:
    (finding,) = lint(code)
    assert (finding.code, finding.value) == ("CK204", value)
    assert finding.evidence == f"a glob of DeepSpeed's file names, {where}"


@pytest.mark.parametrize(
    ("code", "value", "where"),
    [
        ('files = get_checkpoint_files(d, "*_model_states.pt")\n', "*_model_states.pt", "get_checkpoint_files"),
        ('files = find(d, pattern="zero_pp_rank_*_optim_states.pt")\n', "zero_pp_rank_*_optim_states.pt", "find"),
    ],
)
def test_a_glob_of_ds_names_given_to_a_function(code: str, value: str, where: str) -> None:
    (finding,) = lint(code)
    assert (finding.code, finding.value) == ("CK204", value)
    assert finding.evidence == f"a glob of DeepSpeed's file names, given to {where}()"


@pytest.mark.parametrize(
    ("code", "evidence"),
    [
        (
            'folders = glob.glob(f"{path}/global_step*")\n',
            "a path piece 'global_step*': DeepSpeed's tag prefix and a wildcard",
        ),
        (
            'p = f"{path}/global_step{step}/mp_rank_00_model_states.pt"\n',
            "a path piece 'global_step{}': DeepSpeed's tag prefix and a placeholder",
        ),
    ],
    ids=["globbed", "built"],
)
def test_a_tag_as_a_path_piece(code: str, evidence: str) -> None:
    (finding,) = lint(code)
    assert (finding.code, finding.evidence) == ("CK203", evidence)


def test_globs_that_name_no_ds_file_are_silent() -> None:
    assert lint('files = glob.glob(os.path.join(d, "*.pt"))\np = Path(d) / "pytorch_model_*.bin"\n') == []


def test_a_glob_in_a_module_constant_is_evidence_where_its_files_are_loaded() -> None:
    code = """
    MODEL_GLOB = "mp_rank_*_model_states.pt"

    def convert(args):
        for f in sorted(glob.glob(os.path.join(args.input_dir, MODEL_GLOB))):
            sd = torch.load(f, map_location="cpu")
            model.load_state_dict(sd["module"])
    """
    (finding,) = lint(code)
    assert (finding.code, finding.value, finding.candidates) == ("CK101", "module", ("ModuleKeys.MODULE",))
    assert finding.evidence == (
        "a common word, read from what torch.load() returned for the DeepSpeed file 'mp_rank_*_model_states.pt'"
    )


# -- keys of what torch.load returned, judged by the path --------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        # the mapping's expression mentions args: no veto where it is a DeepSpeed file loaded
        """
        def main(args):
            name = "mp_rank_00_model_states.pt"
            sd = torch.load(os.path.join(args.input_model_path, name))["module"]
        """,
        """
        def main(args, name="mp_rank_00_model_states.pt"):
            return torch.load(os.path.join(args.input_model_path, name))["module"]
        """,
        # the name from the module's top level, through assignments
        """
        MODEL_FILE = "mp_rank_00_model_states.pt"

        def load(args):
            p = os.path.join(args.load, MODEL_FILE)
            sd = torch.load(p)
            model.load_state_dict(sd["module"])
        """,
        """
        MODEL_FILE = "mp_rank_00_model_states.pt"

        def load(config):
            state = torch.load(os.path.join(config.ckpt_dir, MODEL_FILE), map_location="cpu", weights_only=False)
            return state.get("module")
        """,
        # a comprehension over a glob, then an element
        """
        def load(d):
            files = sorted(Path(d).glob("mp_rank_*_model_states.pt"))
            states = [torch.load(f) for f in files]
            return states[0]["module"]
        """,
        # a helper of the module that loads it, with the name from the module's top level
        """
        MODEL_FILE = "mp_rank_00_model_states.pt"

        def load_ds(d):
            return torch.load(os.path.join(d, MODEL_FILE))

        def main(args):
            sd = load_ds(args.load)
            return sd["module"]
        """,
        # a parameter, given a glob's files by the module's call of the function (DeepSpeed's zero_to_fp32)
        """
        def parse_model_states(files, ds_dir):
            for f in files:
                state_dict = torch.load(f, map_location="cpu")
                yield state_dict["module"]

        def main(args):
            files = sorted(glob.glob(os.path.join(args.dir, "*_model_states.pt")))
            return list(parse_model_states(files, args.dir))
        """,
        # a method's parameter, given by a call through self
        """
        class Loader:
            def read(self, path, strict=True):
                return torch.load(path)["module"]

            def run(self, d):
                return self.read(os.path.join(d, "mp_rank_00_model_states.pt"))
        """,
        # a loop over enumerate(paths), and with open(path) as f
        """
        def main(args, files=("mp_rank_00_model_states.pt",)):
            for i, f in enumerate(files):
                with open(os.path.join(args.load, f), "rb") as fd:
                    sd = torch.load(fd)
                print(sd["module"])
        """,
    ],
)
def test_keys_of_a_loaded_ds_file_are_reported(code: str) -> None:
    found = [(f.code, f.value) for f in lint(code) if f.code.startswith("CK1")]
    assert found in ([("CK101", "module")], [("CK102", "module")])


def test_a_distinctive_key_of_a_loaded_file_whose_path_mentions_args() -> None:
    code = """
    OPTIM = "zero_pp_rank_0_mp_rank_00_optim_states.pt"

    def main(args):
        o = torch.load(os.path.join(args.load, OPTIM), map_location="cpu", weights_only=False)["optimizer_state_dict"]
    """
    (finding,) = [f for f in lint(code) if f.code == "CK101"]
    assert finding.candidates[0] == "OptimFileKeys.OPTIMIZER_STATE_DICT"
    assert finding.fixable


@pytest.mark.parametrize(
    "code",
    [
        # not a DeepSpeed file: args still vetoes, and no evidence
        """
        def main(args):
            return torch.load(os.path.join(args.load, "model.pt"))["module"]
        """,
        # a parameter the module's calls give no DeepSpeed path
        """
        def read(path):
            return torch.load(path)["optimizer"]

        def run(d):
            return read(os.path.join(d, "checkpoint.pt"))
        """,
        # a config loaded beside a DeepSpeed file name in another function
        """
        def name(d):
            return os.path.join(d, "mp_rank_00_model_states.pt")

        def main(args):
            cfg = torch.load(args.config_path)
            return cfg["optimizer"]
        """,
    ],
)
def test_keys_of_other_mappings_stay_silent(code: str) -> None:
    assert [f for f in lint(code) if f.code.startswith("CK1")] == []


def test_below_module_is_the_models_own_state_dict() -> None:
    code = """
    MODEL_FILE = "mp_rank_00_model_states.pt"

    def main(d):
        sd = torch.load(os.path.join(d, MODEL_FILE))
        return sd["module"]["optimizer"]
    """
    # 'optimizer' there is one of the model's parameters
    assert spots(code) == [("CK202", "mp_rank_00_model_states.pt"), ("CK101", "module")]


def test_a_display_saved_as_a_ds_file() -> None:
    code = """
    MODEL = "mp_rank_00_model_states.pt"
    OPTIM = "zero_pp_rank_0_mp_rank_00_optim_states.pt"

    def save(d, m, n):
        state = {"module": m.state_dict(), "optimizer": None, "mp_world_size": n}
        torch.save(state, os.path.join(d, MODEL))

    def save_optim(d, cfg):
        torch.save({"ds_config": cfg, "ds_version": "0.19.8"}, os.path.join(d, OPTIM))

    def save_plain(d, m):
        torch.save({"module": m.state_dict(), "optimizer": None}, os.path.join(d, "model.pt"))
    """
    found = [(f.line, f.value, f.candidates[0], f.fixable) for f in lint(code) if f.code == "CK104"]
    assert found == [
        (6, "module", "ModuleKeys.MODULE", True),
        (6, "optimizer", "ModuleKeys.OPTIMIZER", True),
        (6, "mp_world_size", "ModuleKeys.MP_WORLD_SIZE", True),
        (10, "ds_config", "OptimFileKeys.DS_CONFIG", True),  # the top level of an optimizer-states file
        (10, "ds_version", "OptimFileKeys.DS_VERSION", True),
    ]
    (module,) = [f for f in lint(code) if f.value == "module"]
    assert module.evidence == "a common word, a key of a dict saved as the DeepSpeed file 'mp_rank_00_model_states.pt'"


# -- what a helper returns, for project mode ---------------------------------------------------


def _function(code: str, name: str) -> tuple[ast.Module, ast.FunctionDef]:
    tree = ast.parse(textwrap.dedent(code))
    (function,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name]
    return tree, function


def test_returned_origin_of_a_helper() -> None:
    code = """
    MODEL_FILE = "mp_rank_00_model_states.pt"

    def get_checkpoint_name(d, mp):
        return os.path.join(d, f"mp_rank_{mp:02d}_model_states.pt")

    def optim_files(d):
        files = glob.glob(os.path.join(d, "*_optim_states.pt"))
        return sorted(files)

    def load_all(d):
        return [torch.load(f, map_location="cpu") for f in optim_files(d)]

    def load_model(d):
        sd = torch.load(os.path.join(d, MODEL_FILE))
        return sd["module"]

    def config(d):
        return os.path.join(d, "config.json")
    """
    tree, name = _function(code, "get_checkpoint_name")
    assert returned_origin(name) == Origin(False, FileKind.MODEL_STATES, "mp_rank_{}_model_states.pt")
    tree, files = _function(code, "optim_files")
    assert returned_origin(files) == Origin(False, FileKind.OPTIM_STATES, "*_optim_states.pt")
    tree, load_all = _function(code, "load_all")
    assert returned_origin(load_all) is None  # optim_files is in the module, not given
    assert returned_origin(load_all, module=tree) == Origin(True, FileKind.OPTIM_STATES, "*_optim_states.pt")
    assert returned_origin(load_all, known={"optim_files": Origin(False, None, "x")}) == Origin(True, None, "x")
    tree, load_model = _function(code, "load_model")
    assert returned_origin(load_model) is None  # MODEL_FILE is the module's
    assert returned_origin(load_model, module=tree) == Origin(
        True, FileKind.MODEL_STATES, "mp_rank_00_model_states.pt", ("module",)
    )
    tree, config = _function(code, "config")
    assert returned_origin(config, module=tree) is None


def test_returned_origin_through_a_helper_of_another_module() -> None:
    _tree, function = _function("def load(d):\n    return torch.load(get_checkpoint_name(d, 0))\n", "load")
    assert returned_origin(function) is None
    known = {"get_checkpoint_name": Origin(False, FileKind.MODEL_STATES, "mp_rank_{}_model_states.pt")}
    assert returned_origin(function, known=known) == Origin(True, FileKind.MODEL_STATES, "mp_rank_{}_model_states.pt")
    # DeepSpeed's own name functions: the glob given, else the kind each names
    _tree, function = _function('def files(d):\n    return get_checkpoint_files(d, "*_optim_states.pt")\n', "files")
    assert returned_origin(function) == Origin(False, FileKind.OPTIM_STATES, "*_optim_states.pt")
    _tree, function = _function(
        "def name(self, d, tag, r):\n    return self._get_optimizer_ckpt_name(d, tag, r)\n", "name"
    )
    assert returned_origin(function) == Origin(False, FileKind.EXPERT_OPTIM_STATES, "_get_optimizer_ckpt_name()")
    # a recursive helper ends
    _tree, function = _function("def f(d):\n    return f(d)\n", "f")
    assert returned_origin(function) is None


# -- the group of the dict level a key is read at ----------------------------------------------


def test_an_optimizer_states_files_top_level_is_optimfilekeys() -> None:
    code = 'def f(optim):\n    return optim["optimizer_state_dict"]["overflow"]\n'
    first, second = lint(code)
    assert first.candidates[0] == "OptimFileKeys.OPTIMIZER_STATE_DICT" and first.fixable
    assert "by the dict level it is read at" in first.message
    assert second.candidates == ("OptimizerKeys.OVERFLOW",)
    assert fixed(code) == (
        "from ckptkeys import OptimFileKeys, OptimizerKeys\n\ndef f(optim):\n"
        "    return optim[OptimFileKeys.OPTIMIZER_STATE_DICT][OptimizerKeys.OVERFLOW]\n"
    )


@pytest.mark.parametrize(
    ("name", "member"),
    [
        ("zero_pp_rank_0_mp_rank_00_optim_states.pt", "OptimFileKeys.DS_CONFIG"),
        ("*_optim_states.pt", "OptimFileKeys.DS_CONFIG"),
        ("mp_rank_00_model_states.pt", "ModuleKeys.DS_CONFIG"),
    ],
)
def test_the_file_loaded_gives_the_group_of_its_top_level(name: str, member: str) -> None:
    code = f'def f(d):\n    sd = torch.load(glob.glob(os.path.join(d, "{name}"))[0])\n    return sd["ds_config"]\n'
    (finding,) = [f for f in lint(code) if f.code == "CK101"]
    assert finding.candidates[0] == member and finding.fixable
    assert f"return sd[{member}]" in fixed(code)


def test_the_level_below_a_key_of_a_loaded_file() -> None:
    code = """
    def f(d):
        optim = torch.load(os.path.join(d, "zero_pp_rank_0_mp_rank_00_optim_states.pt"))
        optim["optimizer_state_dict"].pop("optimizer_state_dict", None)
        return optim["optimizer_state_dict"]["ds_version"]
    """
    found = {(f.line, f.col): f.candidates[0] for f in lint(code) if f.code in ("CK101", "CK102")}
    assert found == {
        (4, 11): "OptimFileKeys.OPTIMIZER_STATE_DICT",
        (4, 39): "OptimizerKeys.OPTIMIZER_STATE_DICT",  # the wrapped torch optimizer's, inside
        (5, 18): "OptimFileKeys.OPTIMIZER_STATE_DICT",
        (5, 42): "OptimizerKeys.DS_VERSION",
    }


def test_the_level_through_a_name_bound_to_a_key() -> None:
    # the keys read below it, through the name, are not the keys around it
    code = """
    def f(optim):
        osd = optim["optimizer_state_dict"]
        return osd["fp32_flat_groups"], osd["ds_version"]
    """
    found = [(f.value, f.candidates[0], f.fixable) for f in lint(code)]
    assert found == [
        ("optimizer_state_dict", "OptimFileKeys.OPTIMIZER_STATE_DICT", True),
        ("fp32_flat_groups", "OptimizerKeys.FP32_FLAT_GROUPS", True),
        ("ds_version", "OptimizerKeys.DS_VERSION", True),
    ]


# -- false alarms --------------------------------------------------------------------------------


def test_a_module_level_config_display_takes_no_evidence_from_a_file_named_elsewhere() -> None:
    code = """
    MODEL_FILE = "mp_rank_00_model_states.pt"
    DEFAULTS = {'version': 'moe', 'optimizer': {'type': 'Adam', 'params': {'lr': 1e-4}}}

    def load(d):
        return torch.load(os.path.join(d, MODEL_FILE))
    """
    assert spots(code) == [("CK202", "mp_rank_00_model_states.pt")]


def test_a_module_level_display_saved_under_a_ds_name_is_still_reported() -> None:
    code = """
    model_state = {"dp_world_size": 1, "mp_world_size": n, "module": {}, "global_steps": 1}
    for rank in range(n):
        torch.save(model_state, os.path.join(path, f"mp_rank_{rank:02d}_model_states.pt"))
    """
    assert [value for code_, value in spots(code) if code_ == "CK104"] == [
        "dp_world_size",
        "mp_world_size",
        "module",
        "global_steps",
    ]


@pytest.mark.parametrize(
    "code",
    [
        'm = re.search(r"global_step_(\\d+)", path)\n',
        'folder = f"global_step_{step}"\n',
        'folders = glob.glob(os.path.join(d, "global_step_*"))\n',
        'step = int(name.replace("global_step_", ""))\n',
        'folder = f"{path}/global_step_{step}"\n',
    ],
)
def test_another_frameworks_global_step_folders_are_silent(code: str) -> None:
    assert lint(code) == []


@pytest.mark.parametrize(
    "code",
    ['m = re.search(r"global_step(\\d+)", path)\n', 'folder = f"global_step{step}"\n', 'glob.glob("global_step*")\n'],
)
def test_ds_tags_are_still_reported(code: str) -> None:
    assert [f.code for f in lint(code)] == ["CK203"]


def test_a_chain_of_names_deeper_than_the_stack_is_no_crash() -> None:
    # followed until the stack ends; then nothing is known of it, and the rest is linted
    chain = "".join(f"    p{i + 1} = p{i}\n" for i in range(3000))
    code = f'NAME = "mp_rank_00_model_states.pt"\n\ndef f(d):\n    p0 = os.path.join(d, NAME)\n{chain}'
    code += "    sd = torch.load(p3000)\n    return sd['module'], sd['param_shapes']\n"
    assert [(f.code, f.value) for f in lint_source(code)] == [
        ("CK202", "mp_rank_00_model_states.pt"),
        ("CK101", "module"),  # beside 'param_shapes'
        ("CK101", "param_shapes"),
    ]
