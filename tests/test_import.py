"""import ckptkeys stays light: no torch, numpy or DeepSpeed, ever."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "numpy", "deepspeed")


def test_import_pulls_in_no_heavy_module() -> None:
    code = (
        "import sys, ckptkeys, ckptkeys.constants; "
        "from ckptkeys import *; "
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
