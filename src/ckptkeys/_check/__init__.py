"""Checking: a folder's layout and the problems in it.

``_layout`` finds a folder's files and names them (:func:`ckptkeys.scan`) from what ``_folders``
lists (inside the folder given; tag folders, the ``latest`` pointers), ``_runs`` finds a run's
saves (:func:`ckptkeys.scan_run`), ``_frameworks`` knows the files Hugging Face Trainer,
Accelerate and Lightning add, ``_converters`` decides converter readiness. ``_entry`` is
:func:`ckptkeys.validate` and kin: it reads a dict, a file, a tag or save folder, or a run and
validates it, returning the reports ``_reports`` defines. ``_dicts`` checks one dict (one
file's) against ``schema``, ``_validate`` checks a tag's files against each other (and reports
its MoE layout), all with the problems ``_problems`` defines, and ``_security`` turns what the
reader saw of pickled globals into problems. It may import ``ckptkeys._read``,
``ckptkeys._keys``, ``ckptkeys._errors`` and the public ``naming`` and ``schema``.
"""
