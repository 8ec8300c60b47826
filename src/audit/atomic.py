"""Write files so that readers see the old file or the whole new one, never a part.

A signed report or a results JSON that is cut short by a crash, a full disk or
an error half way would look like a broken or tampered document; writing to a
temporary file in the same directory and renaming it over the target avoids
that (a rename within one file system is atomic on POSIX and Windows).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from audit.errors import InputError


def write_atomic(path: str | Path, data: bytes, *, mode: int = 0o666) -> Path:
    """Write ``data`` to ``path`` atomically and durably; return the path.

    ``mode`` is filtered by the umask like :func:`open` does (give ``0o600``
    for private keys).  On any failure the target is left as it was and no
    temporary file remains; the error is an :class:`InputError` naming the path.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_directory(target.parent)
    except OSError as exc:
        raise InputError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return target


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX; directories cannot be opened on Windows)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
