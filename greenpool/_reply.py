"""memcached's replies, as greenpool.Client reads them: values fast, and which
reply lines fit which command.

A get or gets reply is ``VALUE <key> <flags> <bytes> [<cas>]\\r\\n<data>\\r\\n``
per key found, then ``END\\r\\n``. :func:`read_values` reads it in 64 KiB
``recv`` calls and slices each value out of what it read, about four times
less Python work per key than pymemcache's line-by-line reader (which reads
4 KiB at a time): multi-key gets, and so autobatching, spend most of their time
here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

from pymemcache.exceptions import MemcacheUnexpectedCloseError, MemcacheUnknownError

__all__ = ["RECV_SIZE", "Value", "fits", "read_values"]

RECV_SIZE = 65536

#: A value of a get reply, by its key as sent: (flags, data, cas token or None).
Value = tuple[int, bytes, Optional[bytes]]

# The reply lines that fit each command read line by line; any other line means
# the connection is out of step (incr and decr answer a number, checked apart).
_MISC_REPLIES = {
    b"delete": (b"DELETED", b"NOT_FOUND"),
    b"touch": (b"TOUCHED", b"NOT_FOUND"),
    b"flush_all": (b"OK",),
}


def read_values(recv: Callable[[int], bytes], cas: bool) -> tuple[dict[bytes, Value], bytes, bytes]:
    """Read ``VALUE`` blocks from *recv* (a socket's) until a line that is not
    one; return the values by key, in reply order, that line (``END``, or an
    error line), and the bytes read past it. Malformed blocks raise, and so does
    a closed connection (pymemcache's ``MemcacheUnexpectedCloseError``)."""
    values: dict[bytes, Value] = {}
    buf = b""
    pos = 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            buf = buf[pos:] + _received(recv, RECV_SIZE)
            pos = 0
            continue
        if not buf.startswith(b"VALUE ", pos):
            return values, buf[pos:eol], buf[eol + 2 :]
        fields = buf[pos + 6 : eol].split()
        start = eol + 2
        end = start + int(fields[2])
        if len(buf) < end + 2:  # the data is not all here: read the rest at once
            buf = _at_least(recv, buf[start:], end + 2 - start)
            start, end = 0, end - start
        if buf[end : end + 2] != b"\r\n":
            raise MemcacheUnknownError(f"a value does not end where its size says: {fields!r}")
        values[fields[0]] = (int(fields[1]), buf[start:end], fields[3] if cas else None)
        pos = end + 2


def _received(recv: Callable[[int], bytes], size: int) -> bytes:
    data = recv(size)
    if not data:
        raise MemcacheUnexpectedCloseError()
    return data


def _at_least(recv: Callable[[int], bytes], have: bytes, size: int) -> bytes:
    """*have* and what *recv* gives next, until there are at least *size* bytes."""
    parts = [have]
    length = len(have)
    while length < size:
        data = _received(recv, max(RECV_SIZE, size - length))
        parts.append(data)
        length += len(data)
    return b"".join(parts)


def fits(cmd_name: bytes, line: bytes) -> bool:
    """Whether *line* is a reply that command *cmd_name* can get (unknown commands:
    anything but an error line)."""
    expected = _MISC_REPLIES.get(cmd_name)
    if expected is not None:
        return line in expected
    if cmd_name in (b"incr", b"decr"):
        return line.isdigit() or line == b"NOT_FOUND"
    if cmd_name == b"version":
        return line.startswith(b"VERSION ")
    return not line.startswith((b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR"))
