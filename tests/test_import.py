"""import ckptkeys stays light: no torch, numpy, DeepSpeed or fsspec (nor a store's package), ever."""

from __future__ import annotations

import subprocess
import sys

# fsspec and the stores' packages are imported only when a URL is read (ckptkeys[remote]).
HEAVY = ("torch", "numpy", "deepspeed", "fsspec", "s3fs", "gcsfs", "huggingface_hub", "botocore", "aiobotocore")


def test_import_pulls_in_no_heavy_module() -> None:
    code = (
        "import sys, ckptkeys, ckptkeys.constants; "
        "from ckptkeys import *; "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_reading_a_local_file_imports_no_fsspec() -> None:
    """A path keeps the local code path: fsspec is imported for a URL only."""
    from .conftest import FIXTURES

    path = FIXTURES / "z2_bf16_ws2" / "global_step3" / "mp_rank_00_model_states.pt"
    code = (
        f"import sys, ckptkeys; ckptkeys.read({str(path)!r}); "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_public_api_is_exactly_all() -> None:
    import ckptkeys

    for name in ckptkeys.__all__:
        assert getattr(ckptkeys, name) is not None
    public = {name for name in dir(ckptkeys) if not name.startswith("_")}
    # The public submodules appear as attributes once imported.
    public -= {"constants", "lint", "naming", "schema", "writing"}
    assert public == set(ckptkeys.__all__) - {"__version__"}


def test_unknown_attribute_is_an_attribute_error() -> None:
    import ckptkeys

    try:
        ckptkeys.OptimiserKeys  # type: ignore[attr-defined]  # checked by mypy: a real error
    except AttributeError as error:
        assert "OptimiserKeys" in str(error)
    else:
        raise AssertionError("no AttributeError")


def test_shim_import_builds_no_registry() -> None:
    code = "import sys, ckptkeys.constants; print('ckptkeys._keys._registry' in sys.modules, 'enum' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-X", "frozen_modules=on", "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split()[0] == "False"


def test_import_loads_only_the_root_errors() -> None:
    """`import ckptkeys` runs two modules; every other name is imported on first use."""
    code = "import sys, ckptkeys; print(sorted(m for m in sys.modules if m.split('.')[0] == 'ckptkeys'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "['ckptkeys', 'ckptkeys._errors']"
