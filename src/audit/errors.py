"""Errors a user can act on.

Every error raised for bad input is an :class:`AuditError` whose message is a
single line; the command line prints it and exits with status 2.  Anything
else escaping is a bug in this package.
"""


class AuditError(Exception):
    """An error whose message is meant for the user (one line, no traceback)."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class InputError(AuditError):
    """A checkpoint, index, mapping or other input file is unusable."""


class NonFiniteError(InputError):
    """A tensor that a computation needs holds NaN or Inf values."""

    def __init__(self, tensor: str, count: int) -> None:
        self.tensor = tensor
        self.count = count
        super().__init__(f"tensor '{tensor}' contains {count} NaN/Inf value(s); refusing to compute statistics on it")

    def __reduce__(self) -> tuple:
        """Pickle by its fields, so it crosses back from a worker process intact."""
        return (NonFiniteError, (self.tensor, self.count))


class NoComparablePopulation(AuditError):
    """The baseline has too few pairs comparable to the case to reach alpha: no p-value is given (exit 4)."""

    exit_code = 4
