"""Export: a checkpoint's tensors out to other formats, planned from the pickles and streamed.

``_plan`` decides which stored bytes make each output tensor (:func:`ckptkeys.plan_export`),
``_spans`` locates a tensor's bytes in its file as ``torch.load`` would, ``_write`` carries a
plan out (:func:`ckptkeys.write_export`) through a format writer (``_safetensors``), casting
with ``_cast`` (numpy, imported only for a cast) where asked. It may import ``ckptkeys._read``,
``ckptkeys._check``, ``ckptkeys._keys``, ``ckptkeys._errors`` and the public ``naming``; never
``lint`` or the command.
"""
