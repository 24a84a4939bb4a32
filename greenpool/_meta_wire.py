"""memcached's meta protocol on the wire: checked keys and flags, strictly read replies.

A meta command is ``<cm> <key> [<datalen>] <flag>*\\r\\n`` (``ms`` adds its data
block); its reply is ``VA <size> <flag>*\\r\\n<data>\\r\\n``, or ``HD``, ``EN``,
``NS``, ``EX``, ``NF`` with flags, or ``MN`` for ``mn`` (memcached's
``doc/protocol.txt``, "Meta Commands"). Keys and flag tokens are checked before
anything is sent: one byte of space or control in either would split the line,
and memcached would run the rest as a command of its own. Replies are read
strictly: a code the command cannot get, a size that is not a bounded number, a
flag that is not a letter and a printable token, an opaque or key that is not
the one sent, data that does not end where its size says: the connection is out
of step, and the reader raises (so :meth:`greenpool.Client._exchange` cuts it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional, Protocol

from pymemcache.exceptions import MemcacheIllegalInputError, MemcacheUnknownError

from greenpool._reply import RECV_SIZE, _at_least, _received

__all__ = ["MAX_VALUE", "check_flag", "read_replies"]

#: The largest value read from a meta reply: memcached's largest item (``-I 1024m``).
MAX_VALUE = 2**30
MAX_KEY = 250
#: Bytes no key or flag token may hold: space, the control bytes, DEL.
_UNSAFE = bytes(range(0x21)) + b"\x7f"
_LETTERS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
#: The reply codes each command can get (``VA`` only when asked for a value: ``v``).
FITS = {
    b"mg": frozenset((b"VA", b"HD", b"EN")),
    b"ms": frozenset((b"HD", b"NS", b"EX", b"NF")),
    b"md": frozenset((b"HD", b"NF", b"EX")),
    b"ma": frozenset((b"VA", b"HD", b"NF", b"NS", b"EX")),
    b"mn": frozenset((b"MN",)),
}
#: Reply flags whose token is a number (``t`` may be -1: no expiry).
_NUMBERS = frozenset("cfhlst")


def _safe(token: bytes) -> bool:
    return len(token.translate(None, _UNSAFE)) == len(token)


def check_flag(flag: Any) -> bytes:
    """Return a meta flag (``"v"``, ``"T30"``, ``b"N30"``...) as sent: an ASCII
    letter and a token of printable bytes, at most 64 in all. ``q`` (replies are
    matched one to a command, so none may be hidden) and ``b`` (keys are sent as
    checked, never base64) are refused.

    :raises MemcacheIllegalInputError: *flag* is anything else.
    """
    if isinstance(flag, str) and flag.isascii():
        token = flag.encode("ascii")
    elif isinstance(flag, bytes):
        token = flag
    else:
        raise MemcacheIllegalInputError(f"a meta flag must be ASCII str or bytes, got {flag!r}")
    if not 0 < len(token) <= 64 or token[0] not in _LETTERS or not _safe(token):
        raise MemcacheIllegalInputError(
            f"a meta flag is a letter and printable token, at most 64 bytes, got {flag!r}"
        )
    if token[:1] in (b"q", b"b"):
        raise MemcacheIllegalInputError(
            f"meta flag {flag!r} is not supported: replies are matched one to a command "
            "(no q), and keys are sent as checked (no b)"
        )
    return token


class Asked(Protocol):
    """What the reader needs of a request: its command, key, and the reply flags
    it must see echoed (see :class:`greenpool.MetaRequest`)."""

    command: bytes
    key: Optional[bytes]
    opaque: Optional[bytes]
    wants_value: bool
    echoes_key: bool


#: A reply as read: (code, flag tokens by letter, value or None).
Parsed = tuple[bytes, dict[str, bytes], Optional[bytes]]
#: Raise for an error reply line: (line, the bytes read past it, whether it
#: answers the last request). It may return only for a complete
#: ``SERVER_ERROR``, and the reply then counts as that error.
OnError = Callable[[bytes, bytes, bool], None]


def read_replies(
    recv: Callable[[int], bytes], asked: Sequence[Asked], on_error: OnError
) -> tuple[list[Parsed], bytes]:
    """Read one reply per request in *asked*, in order, from *recv* (a socket's);
    return them and the bytes read past the last one. A closed connection raises
    pymemcache's ``MemcacheUnexpectedCloseError``, anything out of step
    ``MemcacheUnknownError``, an error line what *on_error* raises."""
    replies: list[Parsed] = []
    buf = b""
    pos = 0
    for index, request in enumerate(asked):
        eol = buf.find(b"\r\n", pos)
        while eol < 0:
            buf = buf[pos:] + _received(recv, RECV_SIZE)
            pos = 0
            eol = buf.find(b"\r\n")
        line = buf[pos:eol]
        pos = eol + 2
        if line.startswith((b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")):
            on_error(line, buf[pos:], index == len(asked) - 1)
            raise MemcacheUnknownError(line[:40])
        code, flags, size = _parse_line(line, request)
        value = None
        if size is not None:
            if len(buf) < pos + size + 2:
                buf = _at_least(recv, buf[pos:], size + 2)
                pos = 0
            end = pos + size
            if buf[end : end + 2] != b"\r\n":
                raise MemcacheUnknownError(
                    f"a meta value does not end where its size says: {line[:40]!r}"
                )
            value = buf[pos:end]
            pos = end + 2
        replies.append((code, flags, value))
    return replies, buf[pos:]


def _parse_line(line: bytes, request: Asked) -> tuple[bytes, dict[str, bytes], Optional[int]]:
    """The code, flags and (``VA`` only) value size of a reply *line* to *request*."""
    parts = line.split(b" ")
    code = parts[0]
    command = request.command
    if (
        code not in FITS[command]
        or (code == b"VA" and not request.wants_value)
        or (code == b"HD" and request.wants_value and command in (b"mg", b"ma"))
    ):
        raise MemcacheUnknownError(f"reply {line[:40]!r} does not fit a {command.decode()} command")
    size = None
    if code == b"VA":
        if len(parts) < 2 or not (parts[1].isdigit() and len(parts[1]) <= 10):
            raise MemcacheUnknownError(f"a meta value's size must be a number: {line[:40]!r}")
        size = int(parts.pop(1))
        if size > MAX_VALUE:
            raise MemcacheUnknownError(f"a meta value's size is beyond {MAX_VALUE}: {line[:40]!r}")
    flags: dict[str, bytes] = {}
    for token in parts[1:]:
        if not token or token[0] not in _LETTERS or not _safe(token):
            raise MemcacheUnknownError(
                f"a meta reply flag must be a letter and token: {line[:40]!r}"
            )
        letter, text = chr(token[0]), token[1:]
        if letter in _NUMBERS and not (text.isdigit() or (letter == "t" and text == b"-1")):
            raise MemcacheUnknownError(f"meta reply flag {letter} must be a number: {line[:40]!r}")
        flags[letter] = text
    if code == b"MN" and flags:
        raise MemcacheUnknownError(f"MN carries no flags: {line[:40]!r}")
    _check_echo(line, flags, "O", request.opaque, code)
    _check_echo(line, flags, "k", request.key if request.echoes_key else None, code)
    return code, flags, size


def _check_echo(
    line: bytes, flags: dict[str, bytes], letter: str, sent: Optional[bytes], code: bytes
) -> None:
    """An opaque (``O``) or key (``k``) in the reply must be the request's; one the
    request asked for may be missing only from ``EN`` (memcached < 1.6.18)."""
    got = flags.get(letter)
    if got == sent or (got is None and code == b"EN"):
        return
    raise MemcacheUnknownError(f"reply {line[:40]!r} does not echo the {letter} flag sent")
