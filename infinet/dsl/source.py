"""Reading ``.net`` source: a path, or the source text itself.

``infinet.compile(...)`` and the CLI's NET argument take either.  A string is a path
when it names an existing file, or when it looks like one and cannot be ``.net``
source: it ends in ``.net``, has no whitespace (every program has at least
``input N``), starts like a path (``/``, ``./``, ``../``, ``~``), or its directory part
is an existing directory.  A path that does not
exist is reported as such (with a hint when adding ``.net`` finds the file) instead of
being parsed as source.

Only regular files are read, and at most :data:`MAX_SOURCE_BYTES` of them: a FIFO, a
device such as ``/dev/zero`` or a huge file is refused before anything is read.  Text
must be UTF-8; a leading byte-order mark is dropped (editors on Windows write one),
and CRLF line ends are accepted by the grammar.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import UsageError

#: The largest .net source read (file or text).  A network written out layer by layer
#: up to the 10,000-layer limit is a few hundred kilobytes.
MAX_SOURCE_BYTES = 2 * 2 ** 20

_BOM = "\ufeff"


def read_source(path_or_source: str | os.PathLike) -> tuple[str, str]:
    """(filename, text) of a ``.net`` file path or of literal ``.net`` source text."""
    if isinstance(path_or_source, os.PathLike):
        return _read_file(Path(path_or_source))
    if not isinstance(path_or_source, str):
        raise UsageError(f"expected a .net path or source text, got "
                         f"{type(path_or_source).__name__}")
    text = path_or_source
    if looks_like_path(text):
        return _read_file(Path(text))
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
        raise UsageError(f"the .net source text is larger than {_limit()}; is it really a "
                         f".net network?")
    return "<string>", text.removeprefix(_BOM)


def looks_like_path(text: str) -> bool:
    """Is a string meant as a path rather than as .net source text?"""
    if not text or "\n" in text or "\r" in text:
        return False
    if os.path.exists(text):
        return True
    if text.strip().endswith(".net"):
        return True
    if not any(c.isspace() for c in text):
        return True          # no .net program fits in one word: it needs `input N`
    if text.lstrip().startswith(("/", "./", "../", "~", os.sep)):
        return True          # no statement starts like that
    directory = os.path.dirname(text)
    return bool(directory) and os.path.isdir(directory)


def _read_file(path: Path) -> tuple[str, str]:
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        # O_NONBLOCK: opening a FIFO with no writer returns at once instead of hanging;
        # fstat below then refuses it.
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file{_did_you_mean(path)}") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a .net file") from None
    except OSError as err:
        raise UsageError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise UsageError(f"{path}: is a directory, not a .net file")
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{path}: is {_kind(info.st_mode)}, not a regular file; "
                             f"give a .net file")
        if info.st_size > MAX_SOURCE_BYTES:
            raise UsageError(f"{path}: is {_size(info.st_size)}, larger than a .net file "
                             f"can be ({_limit()}); is it really a .net file?")
        data = _read_at_most(fd, MAX_SOURCE_BYTES + 1)
    except OSError as err:
        raise UsageError(f"{path}: cannot read: {err.strerror or err}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_SOURCE_BYTES:       # a file that grew, or reports no size (/proc)
        raise UsageError(f"{path}: is larger than a .net file can be ({_limit()}); is it "
                         f"really a .net file?")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) and _is_utf16(data):
        raise UsageError(f"{path}: is UTF-16 text; save it as UTF-8")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a text file (not UTF-8)") from None
    return str(path), text.removeprefix(_BOM)


def _is_utf16(data: bytes) -> bool:
    try:
        data.decode("utf-16")
    except UnicodeDecodeError:
        return False
    return True


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks, size = [], 0
    while size < limit:
        chunk = os.read(fd, min(limit - size, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _did_you_mean(path: Path) -> str:
    if path.suffix != ".net":
        candidate = path.with_name(path.name + ".net")
        if candidate.is_file():
            return f" (did you mean {candidate}?)"
    return ""


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _size(n: int) -> str:
    return f"{n / 2 ** 20:.1f} MiB" if n >= 2 ** 20 else f"{n:,} bytes"


def _limit() -> str:
    return f"{MAX_SOURCE_BYTES // 2 ** 20} MiB"
