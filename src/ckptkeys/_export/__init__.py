"""Export: a checkpoint's tensors out to other formats, planned from the pickles and streamed.

``_entry`` is :func:`ckptkeys.plan_export`: it picks the tag, hands its layout to a planner,
sets the output dtypes and cuts the output into shard files. ``_plan`` holds the planners,
layout by layout, which decide which stored bytes make each output tensor, with ``_ranges``
doing the byte-range arithmetic (torch's slicing, ``chunk`` and ``cat`` on byte ranges);
``_types`` defines the plan (:class:`ckptkeys.ExportPlan` and kin) and :class:`ckptkeys.ExportError`.
``_spans`` locates a tensor's bytes in its file as ``torch.load`` would, ``_write`` carries a
plan out (:func:`ckptkeys.write_export`) through a format writer (``_safetensors``), casting
with ``_cast`` (numpy, imported only for a cast) where asked. It may import ``ckptkeys._read``,
``ckptkeys._check``, ``ckptkeys._keys``, ``ckptkeys._errors`` and the public ``naming``; never
``lint`` or the command.
"""
