"""The ``ckptkeys`` command: a thin layer over the public functions.

``_main`` parses the command line and dispatches; ``_report`` builds the document ``inspect`` and
``validate`` print (JSON) from :func:`ckptkeys.read`, :func:`ckptkeys.scan` and
:func:`ckptkeys.validate_path`, and ``_report_text`` renders it as text. It may import everything
below it; nothing in ckptkeys imports it.
"""
