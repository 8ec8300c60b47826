"""Reading input files at the edge: one place that bounds and refuses.

Every file the audit reads whole (checkpoint headers excepted, which are read
by byte range from a checked regular file) comes through :func:`read_file` or
:func:`read_json_file`.  They refuse, each with one line naming the path:
FIFOs, sockets and devices (``/dev/zero`` would never end, a FIFO blocks),
directories, names longer than the file system allows, files over the size
limit of their kind (checked before reading, and again while reading in case
the file grows), and JSON that is invalid, nested deeper than the parser can
follow, holds integers over Python's 4,300-digit conversion limit, or strings
with lone surrogates (not Unicode; they make printing and hashing fail later).

Symlinks are followed: a Hugging Face cache snapshot is a folder of symlinks
into ``blobs/``.  :func:`resolved` gives the path actually read, which is what
the manifest and ``inspect --json`` record.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from pathlib import Path
from typing import Any, BinaryIO, Callable, NoReturn

from audit.errors import InputError, shown

KIB, MIB = 1 << 10, 1 << 20

# Size limits of whole-file reads, by kind.  Generous for real files (the largest
# tokenizer.json on the Hub is ~30 MB; a 1,000-shard index ~10 MB), small enough
# that json.loads of a hostile file cannot take the machine's memory.
LIMITS = {
    "config": 4 * MIB,
    "tokenizer": 256 * MIB,
    "index": 64 * MIB,
    "mapping": 4 * MIB,
    "plan": 4 * MIB,  # an analysis plan (audit plan)
    "population": 64 * MIB,
    "zoo": 64 * MIB,  # a labelled zoo's labels.json and pairs.json
    "pairs": 512 * MIB,
    "fingerprint": 512 * MIB,
    "key": 1 * MIB,  # a PEM/DER key or certificate chain, or a PKCS#12 file
    "report": 1 << 30,
    "bundle": 4 << 30,
}
MAX_JSON_DEPTH = 64  # nesting levels of any JSON input
MAX_NAME_BYTES = 255  # one path component, the common file-system limit
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def check_name(path: str | os.PathLike) -> Path:
    """``path`` as a Path, refused if a component is too long or it holds a NUL byte."""
    text = os.fspath(path)
    if "\x00" in str(text):
        raise InputError(f"{shown(text)}: a path cannot contain a NUL byte")
    for part in Path(text).parts:
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            raise InputError(f"{shown(text)}: a name in the path is over {MAX_NAME_BYTES} bytes long")
    return Path(text)


def status(path: str | os.PathLike, what: str) -> os.stat_result | None:
    """``os.stat`` (symlinks followed), or None when nothing is there; one line for any other failure."""
    path = check_name(path)
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:  # a component is a file: nothing there, as for a missing name
            return None
        if exc.errno == errno.ELOOP:
            _refuse(path, what, "a symlink loop")
        raise InputError(f"{shown(path, 300)}: cannot read {what}: {exc.strerror or exc}") from None


def is_regular(path: str | os.PathLike) -> bool:
    """True for a regular file (after symlinks), False for anything else or nothing; never raises."""
    try:
        return stat.S_ISREG(os.stat(check_name(path)).st_mode)
    except (OSError, InputError, ValueError):
        return False


def require_regular(path: str | os.PathLike, what: str) -> os.stat_result:
    """The status of a regular file; one line naming what it is instead, or that it is missing."""
    found = status(path, what)
    if found is None:
        raise InputError(f"{shown(path, 300)}: cannot read {what}: no such file")
    if not stat.S_ISREG(found.st_mode):
        _refuse(path, what, _KINDS.get(stat.S_IFMT(found.st_mode), "a special file"))
    return found


def _a(what: str) -> str:
    """``what`` with its indefinite article ("an index", "a config")."""
    return f"{'an' if what[:1] in 'aeiou' else 'a'} {what}"


def _refuse(path: object, what: str, kind: str) -> NoReturn:
    raise InputError(f"{shown(path, 300)}: is {kind}, not {_a(what)} file")


def open_regular(path: str | os.PathLike, *, what: str) -> BinaryIO:
    """A binary handle on a regular file, or one line saying what the path is instead.

    Opened non-blocking and checked on the open descriptor, so a FIFO or a
    device (``/dev/zero``) is refused without ever blocking or reading it,
    even one swapped in after an earlier check.
    """
    path = check_name(path)
    require_regular(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputError(f"{shown(path, 300)}: cannot read {what}: {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        _refuse(path, what, _KINDS.get(stat.S_IFMT(mode), "a special file"))
    return os.fdopen(fd, "rb")


def read_file(path: str | os.PathLike, *, limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, or one line saying why not."""
    with open_regular(path, what=what) as handle:
        try:
            size = os.fstat(handle.fileno()).st_size
            if size > limit:
                raise InputError(f"{shown(path, 300)}: {size:,} bytes is over the {limit:,}-byte limit of {_a(what)} file")
            data = handle.read(limit + 1)
        except OSError as exc:
            raise InputError(f"{shown(path, 300)}: cannot read {what}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InputError(f"{shown(path, 300)}: grew past the {limit:,}-byte limit of {_a(what)} file while being read")
    return data


def parse_json(data: bytes | str, *, where: object, what: str,
               object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> Any:
    """Parse JSON text, refusing with one line anything that is not plain, well-formed, bounded JSON.

    ``where`` (the file) prefixes the message; None when the caller adds its own.
    """
    at = "" if where is None else f"{shown(where, 300)}: "
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    try:
        text = raw.decode("utf-8")
        value = json.loads(text, object_pairs_hook=object_pairs_hook)
    except UnicodeDecodeError as exc:
        raise InputError(f"{at}{what} is not UTF-8 text (bad byte at offset {exc.start})") from None
    except RecursionError:
        raise InputError(f"{at}{what} is nested too deeply (JSON nesting beyond Python's recursion limit)") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{at}{what} is not valid JSON ({exc.msg} at line {exc.lineno} "
                         f"column {exc.colno})") from None
    except ValueError as exc:  # an integer over 4,300 digits (int's conversion limit)
        raise InputError(f"{at}{what} holds a number too long to read ({shown(exc, 100)})") from None
    problem = _tree_problem(value, strings=bool(_SURROGATE_ESCAPE.search(raw)))
    if problem:
        raise InputError(f"{at}{what} {problem}")
    return value


def _tree_problem(value: Any, *, strings: bool) -> str | None:
    """Why a parsed document is refused (too deep, a lone surrogate), or None; iterative, so depth costs no stack.

    Real JSON inputs nest a few levels (tokenizer.json about 8); the bound
    keeps every later reader (which may recurse) far from Python's stack limit.
    """
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth >= MAX_JSON_DEPTH:
                return f"is nested more than {MAX_JSON_DEPTH} levels deep"
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if strings or isinstance(child, (dict, list)))
        elif strings and isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "holds a string with a lone surrogate escape (not valid Unicode)"
    return None


def read_json_file(path: str | os.PathLike, *, limit: int, what: str,
                   object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None) -> Any:
    """:func:`read_file` then :func:`parse_json`: a bounded, checked JSON document or one line."""
    return parse_json(read_file(path, limit=limit, what=what), where=path, what=what, object_pairs_hook=object_pairs_hook)


def resolved(path: str | os.PathLike) -> Path:
    """The absolute path actually read, symlinks resolved (a Hub cache snapshot points into ``blobs/``)."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))
