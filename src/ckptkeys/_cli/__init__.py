"""The ``ckptkeys`` command: a thin layer over the public functions.

``_main`` parses the command line and dispatches; ``_report`` builds the document ``inspect`` and
``validate`` print (JSON) from :func:`ckptkeys.read`, :func:`ckptkeys.scan` and
:func:`ckptkeys.validate_path`, and ``_report_text`` renders it as text. It may import everything
below it; nothing in ckptkeys imports it.

:func:`main` here is the entry of the console script and of ``python -m ckptkeys``: it sets the
signal handlers before anything else is imported, so that Ctrl-C while ``_main`` and its
imports load (tens of milliseconds) ends as it does later, in one line and status 130.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ckptkeys`` command line (``argv``: ``sys.argv[1:]``); return the exit status."""
    try:  # signal's import alone takes milliseconds (its enums): inside, where Ctrl-C is caught
        from ._signals import handled

        with handled():
            from ._main import main as run

            return run(argv)
    except KeyboardInterrupt:  # SIGINT before the handlers were set: Python's own reaction
        return _interrupted(argv, 2)  # signal.SIGINT, everywhere
    except BaseException as error:
        signum = getattr(error, "signum", None)  # _signals.Interrupted, from the handlers set here
        if not isinstance(signum, int) or type(error).__name__ != "Interrupted":
            raise
        return _interrupted(argv, signum)


def _interrupted(argv: Sequence[str] | None, signum: int) -> int:
    """What ``_main`` says of a signal, where it has not said it (``_main`` or its imports were loading)."""
    import signal
    import sys

    arguments = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in arguments if not a.startswith("-")), None)
    known = ("keys", "inspect", "validate", "lint", "export", "universal")  # _main.COMMANDS, which may not be loaded
    prog = f"ckptkeys {command}" if command in known else "ckptkeys"
    if sys.stderr is not None:
        print(f"{prog}: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
    return 128 + signum
