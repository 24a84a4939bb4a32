"""Meta commands: memcached's meta protocol (1.6.10 and newer) as typed requests and replies.

A :class:`MetaRequest` is one command (``mg``, ``ms``, ``md``, ``ma``, ``mn``),
its key and flags checked when it is made; a :class:`MetaReply` is memcached's
answer, read strictly. :class:`greenpool.Client` sends them through its one
command path (:meth:`~greenpool.Client._exchange`), so a meta command that is
interrupted, or whose reply does not parse, cuts its connection like any other:

- :meth:`MetaCommands.meta_batch` sends several requests in one write and reads
  one reply per request, in order (no ``q`` flag: a hidden reply would leave the
  next one unmatched); :meth:`MetaCommands.meta_exchange` is its command and
  reader, which get_or_compute's lease requests send in the batcher's pipelines;
- ``meta_get``, ``meta_set``, ``meta_delete``, ``meta_arithmetic`` and
  ``meta_noop`` send one command, the key checked and prefixed as pymemcache's
  commands do it.

Flags are memcached's tokens as strings: ``"v"``, ``"T30"``, ``"N30"``.

>>> mc = greenpool.PooledClient(memcached_address)
>>> mc.meta_set("meta-doc", b"hello", "T60")
<MetaReply HD>
>>> reply = mc.meta_get("meta-doc", "v", "t", "f")
>>> reply.value, reply.ttl, reply.client_flags
(b'hello', 60, 0)
>>> mc.meta_get("meta-doc-missing", "v")
<MetaReply EN>
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Optional

from pymemcache.client.base import _readline
from pymemcache.exceptions import (
    MemcacheIllegalInputError,
    MemcacheUnexpectedCloseError,
    MemcacheUnknownError,
)

from greenpool._checks import check_key
from greenpool._meta_wire import check_flag, read_replies

__all__ = ["META_VERSION", "MetaCommands", "MetaReply", "MetaRequest"]

#: The first memcached whose meta protocol is stable (``ms <key> <datalen>``, ``HD``).
META_VERSION = (1, 6, 10)
_COMMANDS = {name: name.encode() for name in ("mg", "ms", "md", "ma", "mn")}
_VERSION = re.compile(rb"VERSION (\d+)\.(\d+)\.(\d+)")


class MetaRequest:
    """One meta command: *command* (``"mg"``, ``"ms"``, ``"md"``, ``"ma"`` or
    ``"mn"``), *key* as sent (bytes: encoded and prefixed; none for ``mn``), its
    *flags* (``"v"``, ``"T30"``...), and for ``ms`` its *value* (bytes).

    Everything is checked here, before anything is sent: the key (1 to 250 bytes,
    no space or control byte), each flag (a letter and a printable token; ``q``
    and ``b`` are refused), an opaque ``O`` of at most 32 bytes.

    :raises MemcacheIllegalInputError: a bad key or flag.
    :raises ValueError: an unknown command, or a value, key or flags where the
        command takes none.
    :raises TypeError: a key or value that is not bytes.
    """

    __slots__ = ("command", "echoes_key", "flags", "key", "opaque", "value", "wants_value", "wire")

    def __init__(
        self,
        command: str,
        key: Optional[bytes] = None,
        flags: Iterable[str | bytes] = (),
        value: Optional[bytes] = None,
    ) -> None:
        cmd = _COMMANDS.get(command)
        if cmd is None:
            raise ValueError(f"command must be one of {', '.join(_COMMANDS)}, got {command!r}")
        self.command = cmd
        self.flags = tuple(check_flag(flag) for flag in flags)
        if cmd == b"mn":
            if key is not None or self.flags or value is not None:
                raise ValueError("mn takes no key, flags nor value")
        elif not isinstance(key, bytes):
            raise TypeError(f"key must be bytes (as sent), not {type(key).__name__}")
        else:
            check_key(key, True)
        if (cmd == b"ms") != isinstance(value, bytes):
            if cmd == b"ms":
                raise TypeError(f"value must be bytes, not {type(value).__name__}")
            raise ValueError(f"only ms takes a value, not {command}")
        self.key = key
        self.value = value
        self.opaque = next((t[1:] for t in self.flags if t[:1] == b"O"), None)
        if self.opaque is not None and len(self.opaque) > 32:
            raise MemcacheIllegalInputError(
                f"an opaque (O) is at most 32 bytes, got {self.opaque!r}"
            )
        self.wants_value = b"v" in self.flags
        self.echoes_key = b"k" in self.flags
        head = [cmd] if key is None else [cmd, key]
        if value is not None:
            head.append(b"%d" % len(value))
        line = b" ".join(head + list(self.flags)) + b"\r\n"
        #: The command as sent.
        self.wire = line if value is None else line + value + b"\r\n"

    def __repr__(self) -> str:
        line = self.wire.split(b"\r\n", 1)[0]
        return f"<MetaRequest {line.decode('latin-1')}>"


class MetaReply:
    """memcached's reply to a meta command.

    *status* is its code: ``"VA"`` (a value follows), ``"HD"`` (done, no value),
    ``"EN"`` (miss), ``"NS"`` (not stored), ``"EX"`` (the CAS differs), ``"NF"``
    (not found), ``"MN"`` (the reply to ``mn``). *flags* are the returned flags,
    each letter's token as bytes (``{"t": b"30", "W": b""}``); *value* is the
    data of a ``VA`` reply, else ``None``. The properties read the flags asked
    for (``None`` when absent), and the three memcached sets itself.
    """

    __slots__ = ("flags", "status", "value")

    def __init__(self, status: str, flags: dict[str, bytes], value: Optional[bytes] = None) -> None:
        self.status = status
        self.flags = flags
        self.value = value

    def __repr__(self) -> str:
        tokens = " ".join(letter + token.decode("latin-1") for letter, token in self.flags.items())
        size = "" if self.value is None else f" {len(self.value)}"
        return f"<MetaReply {self.status}{size}{' ' + tokens if tokens else ''}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MetaReply):
            return NotImplemented
        return (self.status, self.flags, self.value) == (other.status, other.flags, other.value)

    __hash__ = None  # type: ignore[assignment]

    @property
    def win(self) -> bool:
        """``W``: this caller won the right to recompute (a lease, a recache, a stale item)."""
        return "W" in self.flags

    @property
    def won_elsewhere(self) -> bool:
        """``Z``: another caller won already, and is recomputing."""
        return "Z" in self.flags

    @property
    def stale(self) -> bool:
        """``X``: the item was invalidated (``md <key> I``) and serves its old value."""
        return "X" in self.flags

    def _number(self, letter: str) -> Optional[int]:
        token = self.flags.get(letter)
        return None if token is None else int(token)

    @property
    def cas(self) -> Optional[int]:
        """``c``: the item's CAS token."""
        return self._number("c")

    @property
    def ttl(self) -> Optional[int]:
        """``t``: seconds left to live, -1 for none."""
        return self._number("t")

    @property
    def client_flags(self) -> Optional[int]:
        """``f``: the client flags stored with the value (a serde's)."""
        return self._number("f")

    @property
    def size(self) -> Optional[int]:
        """``s``: the value's size in bytes."""
        return self._number("s")

    @property
    def last_access(self) -> Optional[int]:
        """``l``: seconds since the item was last read."""
        return self._number("l")

    @property
    def hit_before(self) -> Optional[bool]:
        """``h``: whether the item was read before this command."""
        number = self._number("h")
        return None if number is None else bool(number)

    @property
    def key(self) -> Optional[bytes]:
        """``k``: the key, as sent."""
        return self.flags.get("k")

    @property
    def opaque(self) -> Optional[bytes]:
        """``O``: the opaque token sent with the command."""
        return self.flags.get("O")


class MetaCommands:
    """The meta commands of :class:`greenpool.Client` (a mixin: each goes through
    the client's ``_exchange``). Each raises what pymemcache's commands raise for
    an error reply (``MemcacheClientError`` for ``CLIENT_ERROR``...); *ignore_exc*
    does not apply to them."""

    if TYPE_CHECKING:
        key_prefix: bytes

        def check_key(self, key: Any, key_prefix: bytes) -> bytes: ...
        def _exchange(self, cmd: bytes, read: Callable[[Any], Any], ignored: Any = None) -> Any: ...
        def _error(self, line: bytes, name: bytes, buf: bytes, last: bool) -> None: ...

    def meta_batch(self, requests: Iterable[MetaRequest]) -> list[MetaReply]:
        """Send *requests* in one write and return their replies, in order."""
        asked = list(requests)
        for request in asked:
            if not isinstance(request, MetaRequest):
                raise TypeError(f"requests must be MetaRequests, not {type(request).__name__}")
        if not asked:
            return []
        replies: list[MetaReply] = self._exchange(*self.meta_exchange(asked))
        return replies

    def meta_exchange(
        self, asked: list[MetaRequest]
    ) -> tuple[bytes, Callable[[Any], tuple[list[MetaReply], bytes]]]:
        """The command of MetaRequests *asked* and the reader of their replies (for
        :meth:`meta_batch`, or a pipeline)."""

        def read(sock: Any) -> tuple[list[MetaReply], bytes]:
            parsed, rest = read_replies(sock.recv, asked, self._meta_error)
            return [MetaReply(code.decode(), flags, value) for code, flags, value in parsed], rest

        return b"".join(r.wire for r in asked), read

    def _meta_error(self, line: bytes, buf: bytes, last: bool) -> None:
        self._error(line, b"meta", buf, last)

    def meta_key(self, key: Any) -> bytes:
        """*key* as a meta command sends it: checked and prefixed as every command's
        key (1 to 250 bytes without space or control bytes)."""
        return self.check_key(key, self.key_prefix)

    def _one(
        self, command: str, key: Any, flags: tuple[str | bytes, ...], value: Optional[bytes] = None
    ) -> MetaReply:
        return self.meta_batch([MetaRequest(command, self.meta_key(key), flags, value)])[0]

    def meta_get(self, key: Any, *flags: str | bytes) -> MetaReply:
        """``mg <key> <flags>``: ``VA`` with ``"v"`` and a hit, ``HD`` without, ``EN``."""
        return self._one("mg", key, flags)

    def meta_set(self, key: Any, value: bytes, *flags: str | bytes) -> MetaReply:
        """``ms <key> <len(value)> <flags>`` and *value* (bytes, stored as they are):
        ``HD``, ``NS``, ``EX`` or ``NF``."""
        return self._one("ms", key, flags, value)

    def meta_delete(self, key: Any, *flags: str | bytes) -> MetaReply:
        """``md <key> <flags>`` (``"I"``, ``"T30"``: invalidate instead): ``HD``, ``NF``, ``EX``."""
        return self._one("md", key, flags)

    def meta_arithmetic(self, key: Any, *flags: str | bytes) -> MetaReply:
        """``ma <key> <flags>`` (``"D5"``, ``"MD"``, ``"N0"``, ``"v"``...): ``VA`` with
        the number for ``"v"``, ``HD``, ``NF``, ``NS``, ``EX``."""
        return self._one("ma", key, flags)

    def meta_noop(self) -> MetaReply:
        """``mn``: ``MN``, once every command before it was answered."""
        return self.meta_batch([MetaRequest("mn")])[0]

    def probe_meta(self) -> bool:
        """Whether the server speaks the stable meta protocol: ``mn`` answered with
        ``MN`` by a memcached of ``META_VERSION`` (1.6.10) or newer (or one whose version
        does not parse). An older memcached answers ``ERROR`` or its older
        dialect; twemproxy (nutcracker) closes the connection instead, which costs
        this client its connection and answers ``False``."""

        def read(sock: Any) -> tuple[tuple[bytes, bytes], bytes]:
            buf, first = _readline(sock, b"")
            if first.startswith(b"VERSION "):
                return (b"", first), buf  # mn went unanswered
            buf, second = _readline(sock, buf)
            if not second.startswith(b"VERSION "):
                raise MemcacheUnknownError(f"not the reply to version: {second[:40]!r}")
            return (first, second), buf

        try:
            noop, version = self._exchange(b"mn\r\nversion\r\n", read)
        except MemcacheUnexpectedCloseError:
            return False
        found = _VERSION.match(version)
        return noop == b"MN" and (
            found is None or tuple(int(part) for part in found.groups()) >= META_VERSION
        )
