"""ckptkeys lint: the evidence model, the codes of issue 14, and where --fix puts its import.

Common words are reported only where the code is about DeepSpeed checkpoints; file-name pieces
only where a name or tag is built or parsed. The expected import placements were checked with
isort 9.0 and ruff 0.17: ``isort --check-only`` and ``ruff check --select I`` accept every fixed
text in PLACEMENTS as it is (and the megatron one with ``megatron`` known as first party).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

from ckptkeys.lint import CODES, Finding, fix_source, lint_source

ROOT = pathlib.Path(__file__).resolve().parent.parent


def lint(code: str, path: str = "example.py") -> list[Finding]:
    return lint_source(textwrap.dedent(code), path)


def spots(code: str) -> list[tuple[str, str | None]]:
    return [(f.code, f.value) for f in lint(code)]


def fixed(code: str, path: str = "example.py") -> str:
    source = textwrap.dedent(code)
    return fix_source(source, lint_source(source, path))[0]


# -- common words need evidence ----------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        # Lightning's configure_optimizers return value
        "def configure_optimizers(self):\n    return {'optimizer': opt, 'lr_scheduler': sched}\n",
        # an optimizer of its own: its state, not a DeepSpeed checkpoint
        "def step(self):\n    state['step'] += 1\n    state['exp_avg'].mul_(b1)\n    state['exp_avg_sq'].mul_(b2)\n",
        # a DeepSpeed *config*
        "def f(ds_config):\n    ds_config['optimizer'] = {'type': 'Adam'}\n    return ds_config['zero_stage']\n",
        # Megatron's own checkpoint, beside DeepSpeed's
        "def save(args, sd):\n    if not args.deepspeed:\n        sd['optimizer'] = opt.state_dict()\n",
        (
            "def save(args, sd):\n    if args.deepspeed:\n        engine.save_checkpoint(d)\n"
            "    else:\n        sd['lr_scheduler'] = s\n"
        ),
        # a plain torch checkpoint
        "def save(path):\n    torch.save({'model': m.state_dict(), 'optimizer': o.state_dict(), 'epoch': 3}, path)\n",
    ],
)
def test_common_words_without_evidence_are_silent(code: str) -> None:
    assert lint(code) == []


def test_other_formats_that_share_deepspeeds_words() -> None:
    # Megatron's FP16_Optimizer (DeepSpeed's optimizers inherited its words)
    megatron_fp16 = (
        "def state_dict(self):\n    state_dict = {}\n    state_dict['loss_scaler'] = self.loss_scaler\n"
        "    state_dict['first_closure_call_this_step'] = self.first\n"
        "    state_dict['optimizer_state_dict'] = self.optimizer.state_dict()\n    return state_dict\n"
    )
    assert lint(megatron_fp16) == []
    # Megatron's checkpoint, in a file DeepSpeed's way of naming
    megatron = (
        "def save(it):\n    name = os.path.join(d, 'mp_rank_{:02d}_model_states.pt'.format(r))\n"
        "    sd = {}\n    sd['model'] = m.state_dict()\n    sd['lr_scheduler'] = s.state_dict()\n"
    )
    assert [f.code for f in lint(megatron)] == ["CK201"]
    # ... but Megatron's keys in the branch without DeepSpeed take nothing from DeepSpeed's beside it
    both = "def save(args, sd):\n    if not args.deepspeed:\n        sd['model'] = m\n    x = sd['param_shapes']\n"
    assert spots(both) == [("CK101", "param_shapes")]
    # an optimizer's state in torch's own name, and a Lightning checkpoint's 'global_step'
    assert lint("def f(fsdp_optim_state):\n    return fsdp_optim_state['param_groups']\n") == []
    assert lint("if 'global_step' in pl_sd:\n    print(pl_sd['global_step'])\n") == []


def test_file_name_pieces_are_never_keys() -> None:
    # a wandb log and a training-loop counter: 'global_step' is a tag prefix, not a key
    assert lint("logs = {**logs_dict, 'global_step': step}\nx = state['global_step']\n") == []
    assert lint("def f(d):\n    return d['latest'], d.get('mp_rank_')\n") == []


@pytest.mark.parametrize(
    ("code", "evidence"),
    [
        ("def f(sd):\n    return sd['module'], sd['buffer_names']\n", "also uses the DeepSpeed key 'buffer_names'"),
        (
            "def f(d, mp):\n    sd = torch.load(f'{d}/mp_rank_{mp:02d}_model_states.pt')\n    return sd['module']\n",
            "names the DeepSpeed file",
        ),
        (
            (
                "def name(d):\n    return os.path.join(d, 'mp_rank_00_model_states.pt')\n\n"
                "def load(d):\n    return torch.load(name(d))['module']\n"
            ),
            "calls name(), which names the DeepSpeed file",
        ),
        ("def f(d):\n    return torch.load(get_model_state_file(d, 2))['module']\n", "calls get_model_state_file()"),
        ("def f(model_states):\n    model_states['mp_world_size'] = 1\n", "in a mapping named 'model_states'"),
        ("x = {'module': m, 'param_shapes': p}\n", "beside the DeepSpeed key 'param_shapes' in the same display"),
    ],
)
def test_common_words_with_evidence(code: str, evidence: str) -> None:
    findings = [f for f in lint(code) if f.value in ("module", "mp_world_size")]
    assert findings, code
    assert all(evidence in f.evidence for f in findings), [f.evidence for f in findings]


def test_distinctive_keys_need_no_evidence_and_every_finding_says_why() -> None:
    (finding,) = lint("x = blob['fp32_flat_groups']\n")
    assert finding.code == "CK101" and "no other format uses" in finding.evidence
    source = (ROOT / "tests" / "data" / "lint_corpus" / "dev" / "neox_convert_raw_llama_weights.py.txt").read_text()
    found = lint_source(source, "x.py")
    assert found and all(f.evidence for f in found)


# -- collections of keys -----------------------------------------------------------------------


def test_collections_of_keys() -> None:
    code = "deepspeed_states = ['module', 'optimizer', 'lr_scheduler', 'csr_tensor_module_names', 'iteration']\n"
    assert spots(code) == [
        ("CK107", "module"),
        ("CK107", "optimizer"),
        ("CK107", "lr_scheduler"),
        ("CK107", "csr_tensor_module_names"),
    ]
    assert fixed(code) == (
        "from ckptkeys import ModuleKeys\n\ndeepspeed_states = [ModuleKeys.MODULE.value, ModuleKeys.OPTIMIZER.value, "
        "ModuleKeys.LR_SCHEDULER.value, ModuleKeys.CSR_TENSOR_MODULE_NAMES.value, 'iteration']\n"
    )
    assert lint("valid_keys = {'optimizer', 'lr_scheduler', 'monitor'}\n") == []  # Lightning's, not DeepSpeed's
    assert spots("KEYS = ('dp_world_size', 'mp_world_size')\nx = sd['param_shapes']\n")[:2] == [
        ("CK107", "dp_world_size"),
        ("CK107", "mp_world_size"),
    ]
    assert lint("x = d['param_shapes', 'buffer_names']\n") == []  # one tuple key, not a collection


def test_a_display_is_never_left_half_literal() -> None:
    code = "x = {'param_shapes': p, 'cur_scale': c}\n"  # cur_scale: optimizer or loss scaler, a tie
    findings = lint(code)
    assert [f.value for f in findings] == ["param_shapes", "cur_scale"]
    assert not any(f.fixable for f in findings)
    assert "not fixed: 'cur_scale' beside it is ambiguous" in findings[0].message
    assert fixed(code) == code


# -- file names, tags and the 'latest' file ------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "name = f'mp_rank_{{i:02}}_model_states.pt'",  # a template filled in later with .format
        "suffix = f'-model_{mp_rank:02}-model_states.pt'",  # a tail
        "name = prefix + '_mp_rank_' + mp + '_model_states.pt'",
        "name = 'zero_pp_rank_{}'.format(dp)",  # a head
        "pattern = f'layer_{layer}_expert_{expert}_mp_rank_*_model_states.pt'",  # a glob
    ],
)
def test_rebuilt_file_names(code: str) -> None:
    assert [f.code for f in lint(code)] == ["CK201"]


@pytest.mark.parametrize(
    "code",
    [
        "path = os.path.join(d, it, f'mp_rank_{tp:02d}')",  # Megatron's own folder
        "name = 'mp_rank_{:02d}'.format(rank)",
        "name = f'z3_rank_{rank:02d}_model_states.pt'",  # another project's own name
        "name = f'pytorch_model_{key}.pt'",
    ],
)
def test_names_that_are_not_deepspeed_names(code: str) -> None:
    assert lint(code) == []


@pytest.mark.parametrize(
    ("code", "value"),
    [
        ("tag = f'global_step{step}'", None),
        ("tag = 'global_step%d' % step", None),
        ("tag = 'global_step' + str(step)", None),
        ("d = os.path.join(out, 'global_step0')", "global_step0"),
        ("steps = [int(p.name.replace('global_step', '')) for p in ps]", "global_step"),
        ("found = Path(d).glob('global_step*')", "global_step*"),
    ],
)
def test_tags_built_written_or_parsed_by_hand(code: str, value: str | None) -> None:
    assert spots(code) == [("CK203", value)]


def test_the_latest_file() -> None:
    assert spots("p = os.path.join(d, 'latest')\nq = Path(d) / 'latest_universal'\n") == [
        ("CK202", "latest"),
        ("CK202", "latest_universal"),
    ]
    code = "def main(it):\n    tag = f'global_step{it}'\n    write_tag_file(out, 'latest', tag)\n"
    assert spots(code) == [("CK203", None), ("CK202", "latest")]
    assert lint("msg = 'latest'\nx = d['latest']\nprint('loading latest')\n") == []


def test_file_names_matched_by_hand() -> None:
    code = (
        "a = [f for f in files if str(f).endswith('_model_states.pt')]\n"
        "b = re.fullmatch(r'layer_\\d\\d-model_00-model_states\\.pt', name)\n"
        "c = '_optim_states.pt' in name\n"
    )
    assert [f.code for f in lint(code)] == ["CK204", "CK204", "CK204"]
    assert lint("a = name.startswith('mp_rank_')\n") == []  # Megatron names its folders so too


# -- constants ---------------------------------------------------------------------------------------


def test_package_level_constant_imports() -> None:
    code = "from deepspeed.checkpoint import (\n    ORIGINAL_VOCAB_SIZE,\n    UNIVERSAL_CHECKPOINT_INFO,\n)\n"
    (finding,) = lint(code)
    assert finding.code == "CK302" and finding.fixable
    assert (
        fixed(code) == "from ckptkeys.constants import (\n    ORIGINAL_VOCAB_SIZE,\n    UNIVERSAL_CHECKPOINT_INFO,\n)\n"
    )
    (mixed,) = lint("from deepspeed.checkpoint import DeepSpeedCheckpoint, PADDED_VOCAB_SIZE\n")
    assert mixed.code == "CK302" and not mixed.fixable and "keep DeepSpeedCheckpoint" in mixed.message
    assert lint("from deepspeed.checkpoint import DeepSpeedCheckpoint, get_model_ckpt_name_for_rank\n") == []


def test_hand_copied_constants() -> None:
    code = (
        "ZERO_FILE_PREFIX = 'zero_pp_rank_'\nMP_WORLD_SIZE = 'mp_world_size'\nOPTIMIZER = 'optimizer'\n"
        "suffix = '_model_states.pt'\n\ndef f():\n    PREFIX = 'zero_pp_rank_'\n"
    )
    assert spots(code) == [("CK303", "zero_pp_rank_"), ("CK303", "mp_world_size")]
    after = fixed(code)
    assert "ZERO_FILE_PREFIX = NamingKeys.ZERO_FILE_PREFIX.value" in after
    assert "MP_WORLD_SIZE = ModuleKeys.MP_WORLD_SIZE.value" in after
    namespace: dict[str, object] = {}
    exec(compile(after.replace("def f():\n    PREFIX = 'zero_pp_rank_'\n", ""), "x.py", "exec"), namespace)
    assert namespace["ZERO_FILE_PREFIX"] == "zero_pp_rank_" and type(namespace["ZERO_FILE_PREFIX"]) is str
    assert lint("ZERO_STAGE = 'zero_stage'\n", "deepspeed/checkpoint/constants.py") == []  # the definition


# -- where --fix puts the import ---------------------------------------------------------------------

PLACEMENTS = [
    (  # among the third-party imports, in order
        (
            "import os\n\nimport numpy as np\nimport torch\nfrom accelerate import Accelerator\n"
            "from torch import nn\n\nx = s['param_shapes']\n"
        ),
        (
            "import os\n\nimport numpy as np\nimport torch\nfrom accelerate import Accelerator\n"
            "from ckptkeys import ModuleKeys\nfrom torch import nn\n\nx = s[ModuleKeys.PARAM_SHAPES]\n"
        ),
    ),
    (  # last of the third-party section
        "import os\n\nfrom accelerate import Accelerator\n\nx = s['param_shapes']\n",
        (
            "import os\n\nfrom accelerate import Accelerator\nfrom ckptkeys import ModuleKeys\n\n"
            "x = s[ModuleKeys.PARAM_SHAPES]\n"
        ),
    ),
    (  # a section of its own, after the standard library, before first-party imports
        "import os\nimport sys\n\nfrom .utils import helper\n\nx = s['param_shapes']\n",
        (
            "import os\nimport sys\n\nfrom ckptkeys import ModuleKeys\n\nfrom .utils import helper\n\n"
            "x = s[ModuleKeys.PARAM_SHAPES]\n"
        ),
    ),
    (  # merged into the one there is
        "import torch\nfrom ckptkeys import NamingKeys\n\nx = s['param_shapes']\n",
        "import torch\nfrom ckptkeys import ModuleKeys, NamingKeys\n\nx = s[ModuleKeys.PARAM_SHAPES]\n",
    ),
    (  # only first-party imports: before them
        "from .utils import helper\n\nx = s['param_shapes']\n",
        "from ckptkeys import ModuleKeys\n\nfrom .utils import helper\n\nx = s[ModuleKeys.PARAM_SHAPES]\n",
    ),
]


@pytest.mark.parametrize(("before", "after"), PLACEMENTS)
def test_fix_places_the_import_as_isort_does(before: str, after: str) -> None:
    assert fixed(before) == after
    assert fixed(after) == after


def test_first_party_is_the_package_the_file_is_in(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "megatron" / "checkpointing.py")
    before = "import os\n\nimport torch\n\nfrom megatron import mpu\n\nx = s['param_shapes']\n"
    assert fixed(before, path) == (
        "import os\n\nimport torch\nfrom ckptkeys import ModuleKeys\n\nfrom megatron import mpu\n\n"
        "x = s[ModuleKeys.PARAM_SHAPES]\n"
    )


def test_lazy_imports_stay_lazy() -> None:
    code = '''\
        import os


        def convert(d):
            """Convert."""
            import deepspeed

            sd = torch.load(os.path.join(d, 'x'))
            return sd['param_shapes'], sd['buffer_names']


        def other(sd):
            return sd['frozen_param_shapes']
        '''
    assert fixed(code) == textwrap.dedent(
        '''\
        import os


        def convert(d):
            """Convert."""
            from ckptkeys import ModuleKeys
            import deepspeed

            sd = torch.load(os.path.join(d, 'x'))
            return sd[ModuleKeys.PARAM_SHAPES], sd[ModuleKeys.BUFFER_NAMES]


        def other(sd):
            from ckptkeys import ModuleKeys
            return sd[ModuleKeys.FROZEN_PARAM_SHAPES]
        '''
    )
    eager = "import deepspeed\n\n\ndef f(sd):\n    return sd['param_shapes']\n"
    assert fixed(eager).startswith("import deepspeed\nfrom ckptkeys import ModuleKeys\n")


# -- documentation and the command --------------------------------------------------------------------

SECTION = re.compile(r"^### `(CK\d{3})`", re.MULTILINE)


def _examples() -> dict[str, tuple[str, str]]:
    text = (ROOT / "docs" / "lint.md").read_text(encoding="utf-8")
    found: dict[str, tuple[str, str]] = {}
    parts = SECTION.split(text)
    for code, body in zip(parts[1::2], parts[2::2], strict=True):
        wrong = re.search(r"Wrong:\s*(?:<!-- mypy -->\s*)?```python\n(.*?)```", body, re.DOTALL)
        right = re.search(r"Right:\s*(?:<!-- mypy -->\s*)?```python\n(.*?)```", body, re.DOTALL)
        assert wrong and right, code
        found[code] = (wrong.group(1), right.group(1))
    return found


def test_every_code_has_a_right_and_a_wrong_example_that_behave() -> None:
    examples = _examples()
    assert set(examples) == set(CODES) - {"CK001"}
    for code, (wrong, right) in examples.items():
        assert code in [f.code for f in lint_source(wrong, "wrong.py")], (code, wrong)
        assert code not in [f.code for f in lint_source(right, "right.py")], (code, right)


def test_json_explains_the_evidence(tmp_path: pathlib.Path) -> None:
    (tmp_path / "t.py").write_text("def f(sd):\n    return sd['module'], sd['buffer_names']\n")
    done = subprocess.run(
        [sys.executable, "-m", "ckptkeys", "lint", "--json", "t.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONIOENCODING="utf-8"),
        check=False,
    )
    findings = json.loads(done.stdout)["findings"]
    assert [f["value"] for f in findings] == ["module", "buffer_names"]
    assert "also uses the DeepSpeed key 'buffer_names'" in findings[0]["evidence"]
    assert "no other format uses" in findings[1]["evidence"]


@pytest.mark.parametrize(
    ("code", "found"),
    [
        # GPT-NeoX's merge20b.py: two keys of DeepSpeed's model-states top level, on one loaded checkpoint
        (
            "def f(p):\n    sd = torch.load(p)\n    sd['mp_world_size'] = 1\n    sd['dp_world_size'] = 1\n",
            [("CK101", "mp_world_size"), ("CK101", "dp_world_size")],
        ),
        ("def f(p):\n    sd = torch.load(p)\n    n = sd.get('global_samples')\n    return sd['skipped_steps'], n\n", [
            ("CK102", "global_samples"), ("CK101", "skipped_steps"),
        ]),  # fmt: skip
        # one alone, each a word of configs and arguments: nothing
        ("def f(p):\n    sd = torch.load(p)\n    sd['mp_world_size'] = 1\n", []),
        # not what torch.load returned: a config, arguments
        ("def f(c):\n    sd = json.load(c)\n    sd['mp_world_size'] = 1\n    sd['dp_world_size'] = 1\n", []),
        ("def f(p):\n    sd = read(p)\n    sd['mp_world_size'] = 1\n    sd['dp_world_size'] = 1\n", []),
        # the keys every PyTorch checkpoint has: a model, an optimizer, a scheduler
        ("def f(p):\n    sd = torch.load(p)\n    return sd['module'], sd['optimizer'], sd['lr_scheduler']\n", []),
        # two mappings, one key each
        ("def f(p, q):\n    a = torch.load(p)\n    b = torch.load(q)\n    return a['mp_world_size'], b['dp_world_size']\n", []),
    ],
)
def test_two_model_states_keys_read_from_one_loaded_checkpoint(code: str, found: list[tuple[str, str]]) -> None:
    assert [(f.code, f.value) for f in lint(code) if f.code.startswith("CK1")] == found
