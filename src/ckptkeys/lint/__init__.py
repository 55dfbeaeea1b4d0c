"""Find loose checkpoint-key strings in Python code, and rewrite them to the key registry.

:func:`lint_source` reports each string literal whose value is a DeepSpeed checkpoint key where
the code is about DeepSpeed checkpoints (a key position: a subscript, ``.get``/``.pop``/
``.setdefault``, an ``in`` test, a dict-display key, an ``==`` with a key variable, a ``key=``
argument; or a collection of keys), each checkpoint file name or tag built, written or parsed by
hand, each hand-copied DeepSpeed constant, and each import of DeepSpeed's key constants. Every
finding says why it was reported (:attr:`Finding.evidence`). :func:`fix_source` rewrites the
findings whose target is unambiguous. docs/lint.md has the rules and every code.

``_codes`` holds the codes and their messages (:data:`CODES`) and :class:`Finding`; ``_files``
finds the ``.py`` files under the paths given and decodes them; ``_evidence`` holds the evidence
rules: DeepSpeed's checkpoint vocabulary (the registry by value, the common words, other formats'
keys) and the recognisers of checkpoint file names; ``_fix`` rewrites the fixable findings and
places the import they need; ``_linter`` holds the rest for now. It may import
``ckptkeys._keys``, ``ckptkeys.naming`` and ``ckptkeys.constants``, nothing else of ckptkeys.
"""

from __future__ import annotations

from ._codes import CODES, Finding
from ._files import decode_source, iter_python_files
from ._fix import fix_source
from ._linter import lint_source

__all__ = ["CODES", "Finding", "decode_source", "fix_source", "iter_python_files", "lint_source"]
