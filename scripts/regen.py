"""Regenerate the generated files: from the registry, docs/keys.md and src/ckptkeys/constants.py;
from the code, docs/api.md and the synopses of docs/cli.md (scripts/docgen.py).

    python scripts/regen.py

Any Python 3.10-3.13 gives the same files; nothing but this tree is imported.
"""

from __future__ import annotations

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

import docgen  # noqa: E402

from ckptkeys._keys import _render  # noqa: E402

GENERATED = {
    ROOT / "docs" / "keys.md": lambda _old: _render.render_markdown(),
    ROOT / "src" / "ckptkeys" / "constants.py": lambda _old: _render.render_constants_module(),
    **{ROOT / path: render for path, render in docgen.GENERATED.items()},
}


def main() -> None:
    for path, render in GENERATED.items():
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        new = render(old)
        if new != old:
            path.write_text(new, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
        else:
            print(f"unchanged {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
