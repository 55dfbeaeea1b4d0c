"""Regenerate the files derived from the registry: docs/keys.md and src/ckptkeys/constants.py."""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from ckptkeys._keys import _render  # noqa: E402

GENERATED = {
    ROOT / "docs" / "keys.md": _render.render_markdown,
    ROOT / "src" / "ckptkeys" / "constants.py": _render.render_constants_module,
}


def main() -> None:
    for path, render in GENERATED.items():
        path.write_text(render(), encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
