"""Checking: a folder's layout and the problems in it.

``_layout`` finds a folder's files and names them (:func:`ckptkeys.scan`), ``_frameworks`` knows
the files Hugging Face Trainer, Accelerate and Lightning add, ``_converters`` decides converter
readiness, ``_validate`` reports problems (:func:`ckptkeys.validate`) as ``_problems`` defines
them, and ``_security`` turns what the reader saw of pickled globals into problems. It may import
``ckptkeys._read``, ``ckptkeys._keys``, ``ckptkeys._errors`` and the public ``naming`` and
``schema``.
"""
