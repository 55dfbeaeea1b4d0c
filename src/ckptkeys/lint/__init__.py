"""Find loose checkpoint-key strings in Python code, and rewrite them to the key registry.

:func:`lint_source` reports each string literal whose value is a DeepSpeed checkpoint key where
the code is about DeepSpeed checkpoints (a key position: a subscript, ``.get``/``.pop``/
``.setdefault``, an ``in`` test, a dict-display key, an ``==`` with a key variable, a ``key=``
argument; or a collection of keys), each checkpoint file name or tag built, written or parsed by
hand, each hand-copied DeepSpeed constant, and each import of DeepSpeed's key constants. Every
finding says why it was reported (:attr:`Finding.evidence`). :func:`fix_source` rewrites the
findings whose target is unambiguous; :func:`lint_project` lints the files of one project
together, each with the evidence of the helpers it imports from the others. docs/lint.md has the rules and every code.

The modules, one job each (each imports only those above it):

- ``_codes``: the codes and their messages (:data:`CODES`) and :class:`Finding`.
- ``_files``: the ``.py`` files under the paths given (:func:`iter_python_files`), their text
  decoded (:func:`decode_source`), and their lines as Python counts them.
- ``_gitignore``: which files git ignores, ``.gitignore`` read as git reads it (the walk's
  ``respect_gitignore``).
- ``_evidence``: the evidence rules: DeepSpeed's checkpoint vocabulary (the registry by value,
  the common words, other formats' keys, the names that show code is about DeepSpeed
  checkpoints), the recognisers of checkpoint file names, and the weighing of a key candidate.
- ``_paths``: the reading of names and paths: which expressions hold a DeepSpeed file's name or
  path (globs and ``os.path.join``/``pathlib`` pieces included), followed through assignments,
  loops and the module's functions; what ``torch.load`` returned for one, and the dict level a
  key is read at (:func:`~ckptkeys.lint._paths.returned_origin` for a helper's callers).
- ``_linter``: the walk of the syntax tree that finds the candidates and reports the findings
  (:func:`lint_source`, with ``--select``/``--ignore`` and ``# ckptkeys: ignore``).
- ``_project``: project mode (:func:`lint_project`): the files of one project linted together,
  the project's own imports resolved statically, so that a helper of one module that names or
  loads a DeepSpeed checkpoint file is evidence where another module calls it.
- ``_fix``: the rewrite of the fixable findings, and where the import they need goes
  (:func:`fix_source`).

It may import ``ckptkeys._keys``, ``ckptkeys.naming`` and ``ckptkeys.constants``, nothing else of ckptkeys.
"""

from __future__ import annotations

from ._codes import CODES, Finding
from ._files import decode_source, iter_python_files
from ._fix import fix_source
from ._linter import lint_source
from ._project import lint_project

__all__ = ["CODES", "Finding", "decode_source", "fix_source", "iter_python_files", "lint_project", "lint_source"]
