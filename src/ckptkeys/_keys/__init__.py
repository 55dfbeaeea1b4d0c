"""The key groups: DeepSpeed's vocabulary as ``StrEnum`` members, and what is made from them.

``_strenum`` is the enum machinery (with the 3.10 backport), ``_registry`` every group and member,
``_plain`` turns members back into plain ``str`` for pickling, and ``_render`` writes the registry
out (``ckptkeys keys``, ``docs/keys.md``, the ``ckptkeys.constants`` shim). It may import only
``ckptkeys._errors``: everything else in ckptkeys builds on it.
"""
