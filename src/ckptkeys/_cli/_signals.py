"""SIGINT, SIGTERM and SIGHUP on every command: one line, temporary files removed, exit 128 + N.

Python's own reaction to them is a traceback (SIGINT's ``KeyboardInterrupt``) or an exit that
runs no cleanup at all (SIGTERM, SIGHUP: the default action kills the process, leaving an
export's temporary files behind). :func:`handled` turns each into :class:`Interrupted`, raised
where the program is, so that every ``finally`` and ``except BaseException`` on the way out
removes what it was writing; the command then says so in one line and exits with the shell's
status for the signal (130, 143, 129). A signal that the process inherited as ignored (``nohup``
ignores SIGHUP; a background job of a non-interactive shell ignores SIGINT) stays ignored.
"""

from __future__ import annotations

import contextlib
import signal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Final

__all__ = ["Interrupted", "handled", "raise_swallowed"]

# The signals a user, a scheduler (SLURM, timeout) or a closed terminal sends to stop a command.
NAMES: Final = ("SIGINT", "SIGTERM", "SIGHUP")


class Interrupted(BaseException):
    """A signal arrived: ``signum``. A BaseException, like KeyboardInterrupt: no ``except
    Exception`` on the way out swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def status(self) -> int:
        """The exit status a shell gives a process the signal ended: 128 + its number."""
        return 128 + self.signum


class _Received:
    """The signal whose :class:`Interrupted` was raised in this :func:`handled` block, if any."""

    signum: int | None = None


def raise_swallowed() -> None:
    """Raise :class:`Interrupted` again if a signal's was raised and something on its way out
    turned it into another error (numpy's import machinery makes an ImportError of any exception
    raised while it imports), so that the command still ends as the signal says."""
    if _Received.signum is not None:
        raise Interrupted(_Received.signum)


def _said() -> bool:
    """Whether a signal's :class:`Interrupted` was raised (its handlers are then ignoring signals)."""
    return _Received.signum is not None


def _raise(signum: int, frame: object) -> None:
    # Once: a second Ctrl-C while the first one's cleanup runs must not cut that cleanup short.
    for name in NAMES:
        number = getattr(signal, name, None)
        if number is not None and signal.getsignal(number) is _raise:
            signal.signal(number, signal.SIG_IGN)
    _Received.signum = signum
    raise Interrupted(signum)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Within: the signals raise :class:`Interrupted` (unless inherited as ignored); after, the
    handlers that were there before are back (``main()`` also runs inside test processes).
    Outside the main thread (where no handler can be set) nothing changes."""
    before: dict[int, object] = {}
    _Received.signum = None
    try:
        for name in NAMES:
            number = getattr(signal, name, None)
            if number is None:  # Windows has no SIGHUP
                continue
            current = signal.getsignal(number)
            if current is signal.SIG_IGN:
                continue
            before[number] = signal.SIG_DFL if current is None else current  # None: set outside Python
            signal.signal(number, _raise)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for number, handler in before.items():
            if handler is _raise and _said():
                continue  # nested in an outer block (the entry's): still once, the signal was said
            signal.signal(number, handler)  # type: ignore[arg-type]
