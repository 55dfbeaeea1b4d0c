"""Universal: a checkpoint converted to DeepSpeed's universal format, as ``ds_to_universal`` writes it.

``_types`` defines the plan (:class:`ckptkeys.UniversalPlan`, :class:`ckptkeys.UniversalFile`,
:class:`ckptkeys.NotRestored`); ``_entry`` is :func:`ckptkeys.plan_universal`: it picks the tag
as export does, refuses what ``ds_to_universal`` refuses, and hands the layout to a planner
(``_zero12`` for ZeRO-1/2 and the BF16 optimizer, tensor and pipeline parallel included;
``_zero3`` for ZeRO-3), each deciding which stored bytes make every output file's tensors, from
the pickles alone. ``_write`` carries a plan out (:func:`ckptkeys.write_universal`): every
``.pt`` through export's torch-free writer (``ckptkeys._export._pt``), the model-states files
copied, the tag staged and put in place whole, ``latest_universal`` last. It may import
``ckptkeys._export``, ``ckptkeys._check``, ``ckptkeys._read``, ``ckptkeys._keys``,
``ckptkeys._errors`` and the public ``naming``; never ``lint`` or the command.
"""
