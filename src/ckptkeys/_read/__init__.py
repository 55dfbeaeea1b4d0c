"""Reading: the bytes of one file to an inert structure, without importing or running anything.

``_zip`` reads torch's archive as torch's own reader (miniz) does, ``_pickle`` is the inert
pickle machine, ``_torch`` knows how ``torch.load`` resolves globals and rebuilds tensors,
``_reader`` puts them together (:func:`ckptkeys.read`) within the ``_limits``, and ``_globals``
classifies every global a file names (``_globalref``). Its errors (``ReadError`` and kin) live in
``_errors``. It may import ``ckptkeys._errors`` and ``ckptkeys._keys``, nothing else of ckptkeys.
"""
