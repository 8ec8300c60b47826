"""Errors a user can act on, and the exit status of each outcome.

Modelled on sigstore-python's ``errors.py``: every error class owns its
user-facing text, which is one line of bounded length (a 90 MB tensor name or
a multi-line exception text must never reach the terminal whole).  The
command line prints :meth:`AuditError.line` and exits with the class's
:attr:`~AuditError.exit_code`; ``--verbose`` re-raises the original exception
instead, traceback included.  Anything else escaping the library is a bug and
becomes an :class:`InternalError` (its own exit status, never confused with a
failed verification or with bad input).
"""

from __future__ import annotations

from enum import IntEnum

MAX_MESSAGE_CHARS = 600  # one terminal line or three; longer texts are cut in the middle
MAX_NAME_CHARS = 120  # a tensor, member or file name quoted inside a message


class ExitCode(IntEnum):
    """The exit status of every ``audit`` command (documented in the README)."""

    OK = 0
    NOT_VERIFIED = 1  # `verify` found a failed check, or a verdict check failed
    BAD_INPUT = 2  # an input file, argument or population is unusable
    INTERNAL = 3  # a bug in this package: please report it (rerun with --verbose)
    NO_COMPARABLE_POPULATION = 4  # `evaluate`: the baseline has too few comparable pairs to reach alpha
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


def one_line(text: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` on one line, printable whatever it holds, at most ``limit`` characters.

    Lone surrogates and control characters are escaped (printing them would
    raise or garble the terminal); an over-long text keeps its start and end.
    """
    flat = " ".join(str(text).split())
    flat = flat.encode("utf-8", "backslashreplace").decode("utf-8")
    flat = "".join(c if c.isprintable() else repr(c)[1:-1] for c in flat) if not flat.isprintable() else flat
    if len(flat) <= limit:
        return flat
    keep = (limit - 25) // 2
    return f"{flat[:keep]} ...[{len(flat) - 2 * keep} chars]... {flat[-keep:]}"


def shown(name: object, limit: int = MAX_NAME_CHARS) -> str:
    """A name quoted inside a message: one line, escaped, cut to ``limit`` characters."""
    return one_line(name, limit)


class AuditError(Exception):
    """An error whose message is meant for the user (one line, no traceback)."""

    exit_code: int = ExitCode.BAD_INPUT
    label = "error"

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))

    def line(self) -> str:
        """What the command line prints on stderr: exactly one line."""
        return f"audit: {self.label}: {self}"


class InputError(AuditError):
    """A checkpoint, index, mapping, population or other input file is unusable."""


class SchemaError(InputError):
    """A JSON input holds a field of the wrong type or out of range; names the file and the field."""

    def __init__(self, where: object, field: str, expected: str) -> None:
        self.where, self.field, self.expected = str(where), field, expected
        super().__init__(f"{shown(where, 300)}: {shown(field, 200)} must be {expected}")

    def __reduce__(self) -> tuple:
        return (SchemaError, (self.where, self.field, self.expected))


class NonFiniteError(InputError):
    """A tensor that a computation needs holds NaN or Inf values."""

    def __init__(self, tensor: str, count: int) -> None:
        self.tensor = tensor
        self.count = count
        super().__init__(f"tensor '{shown(tensor)}' contains {count} NaN/Inf value(s); refusing to compute statistics on it")

    def __reduce__(self) -> tuple:
        """Pickle by its fields, so it crosses back from a worker process intact."""
        return (NonFiniteError, (self.tensor, self.count))


class NoComparablePopulation(AuditError):
    """The baseline holds too few pairs comparable to the case to reach alpha: no p-value, say what is needed."""

    exit_code = ExitCode.NO_COMPARABLE_POPULATION
    label = "no comparable population"


class InternalError(AuditError):
    """An unexpected exception: a bug in this package, reported in one line."""

    exit_code = ExitCode.INTERNAL
    label = "internal error"

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause
        super().__init__(f"{type(cause).__name__}: {one_line(cause, 300)} (please report it; rerun with --verbose "
                         "for the traceback)")


class Interrupted(AuditError):
    """Ctrl-C: stop at once; atomic writes leave nothing half-written."""

    exit_code = ExitCode.INTERRUPTED
    label = "interrupted"

    def __init__(self) -> None:
        super().__init__("stopped by the user; nothing half-written was left behind")
