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

import re
from collections.abc import Callable
from typing import Any, Optional, TypeVar, Union

from pymemcache.exceptions import MemcacheUnexpectedCloseError, MemcacheUnknownError

__all__ = [
    "IN_STEP",
    "MAX_VALUE_SIZE",
    "RECV_SIZE",
    "Exchange",
    "Outcome",
    "Value",
    "complete_error",
    "fits",
    "read_values",
    "value_header",
]

RECV_SIZE = 65536
#: The largest value a reply may announce: memcached's item size limit is set
#: by ``-I`` (1 MiB by default), and a size past 1 GiB is a protocol error.
MAX_VALUE_SIZE = 1 << 30
_FLAGS_MAX = 2**32 - 1
_CAS_DIGITS = 20  # 2**64 - 1
# A whole VALUE line of a get (or gets) reply, its numbers of bounded length.
_GET_HEADER = re.compile(rb"VALUE (\S{1,250}) (\d{1,10}) (\d{1,10})\r\n")
_GETS_HEADER = re.compile(rb"VALUE (\S{1,250}) (\d{1,10}) (\d{1,10}) (\d{1,20})\r\n")

#: A value of a get reply, by its key as sent: (flags, data, cas token or None).
Value = tuple[int, bytes, Optional[bytes]]
#: One key's outcome in ``Client.fetch_each_op``'s reader: its value, None, or its error.
Outcome = Union[Value, None, Exception]
T = TypeVar("T")
#: A command's bytes and the reader of its reply: the socket (or anything with
#: its ``recv``) -> the result, and the bytes read past the reply.
Exchange = tuple[bytes, Callable[[Any], tuple[T, bytes]]]
#: The attribute an exception raised for a complete error reply carries: the
#: bytes read past that reply (the connection is in step up to there).
IN_STEP = "greenpool_read_past"

# The reply lines that fit each command read line by line; any other line means
# the connection is out of step (incr and decr answer a number, checked apart).
_MISC_REPLIES = {
    b"delete": (b"DELETED", b"NOT_FOUND"),
    b"touch": (b"TOUCHED", b"NOT_FOUND"),
    b"flush_all": (b"OK",),
}


def read_values(
    recv: Callable[[int], bytes], cas: bool, buf: bytes = b""
) -> tuple[dict[bytes, Value], bytes, bytes]:
    """Read ``VALUE`` blocks from *buf* (bytes read already) then *recv* (a
    socket's) until a line that is not one; return the values by key, in reply
    order, that line (``END``, or an error line), and the bytes read past it.
    Malformed blocks raise (:func:`value_header`), and so does a closed connection
    (pymemcache's ``MemcacheUnexpectedCloseError``)."""
    values: dict[bytes, Value] = {}
    pos = 0
    header = (_GETS_HEADER if cas else _GET_HEADER).match  # value_header's rule, in C
    while True:
        found = header(buf, pos)
        if found is None:  # not a whole VALUE line: a partial one, the end, or bad
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                buf = buf[pos:] + _received(recv, RECV_SIZE)
                pos = 0
                continue
            if not buf.startswith(b"VALUE ", pos):
                return values, buf[pos:eol], buf[eol + 2 :]
            raise _unparsed(buf[pos:eol])
        if cas:
            key, flags, size, token = found.groups()
        else:
            key, flags, size = found.groups()
            token = None
        flags, size = int(flags), int(size)
        if flags > _FLAGS_MAX or size > MAX_VALUE_SIZE:
            raise _unparsed(found.group()[:-2])
        start = found.end()
        end = start + size
        if len(buf) < end + 2:  # the data is not all here: read the rest at once
            buf = _at_least(recv, buf[start:], end + 2 - start)
            start, end = 0, end - start
        if not buf.startswith(b"\r\n", end):
            raise MemcacheUnknownError(f"a value does not end where its size says: {key!r}")
        values[key] = (flags, buf[start:end], token)
        pos = end + 2


def value_header(line: bytes, cas: bool) -> tuple[bytes, int, int, Optional[bytes]]:
    """The key, flags, size and (with *cas*) cas token of a ``VALUE`` *line*.

    :raises MemcacheUnknownError: naming the line, unless it has exactly the
        fields of a get (or, with *cas*, gets) reply, each a number in its range:
        flags below 2**32, a size of at most :data:`MAX_VALUE_SIZE`.
    """
    fields = line.split()
    if (
        len(fields) == (5 if cas else 4)
        and fields[2].isdigit()
        and fields[3].isdigit()
        and (not cas or (fields[4].isdigit() and len(fields[4]) <= _CAS_DIGITS))
    ):
        flags, size = int(fields[2]), int(fields[3])
        if flags <= _FLAGS_MAX and size <= MAX_VALUE_SIZE:
            return fields[1], flags, size, fields[4] if cas else None
    raise _unparsed(line)


def _unparsed(line: bytes) -> MemcacheUnknownError:
    return MemcacheUnknownError(f"a VALUE line that does not parse: {line[:80]!r}")


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
    if cmd_name in (b"incr", b"decr"):  # a 64-bit number
        return (line.isdigit() and len(line) <= _CAS_DIGITS) or line == b"NOT_FOUND"
    if cmd_name == b"version":
        return line.startswith(b"VERSION ")
    return not line.startswith((b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR"))


def complete_error(line: bytes, name: bytes) -> bool:
    """Whether *line* is an error reply that ends command *name*'s reply in full,
    the connection in step after it: a ``SERVER_ERROR`` (memcached's for a value
    too large, a proxy's for a failed backend), or a ``CLIENT_ERROR`` to an incr
    or decr (memcached's for a value that is not a number)."""
    return line.startswith(b"SERVER_ERROR") or (
        name in (b"incr", b"decr") and line.startswith(b"CLIENT_ERROR")
    )
