"""How pymemcache's commands talk to memcached on a greenpool Client: each builds
its command line and the reader of its reply, and hands both to the client's
one command path (:meth:`greenpool.Client._exchange`), or to a pipeline.

pymemcache's ``Client`` sends everything through three methods, ``_fetch_cmd``
(get, gets, stats...), ``_store_cmd`` (set, add, cas...) and ``_misc_cmd``
(delete, incr, touch, version...); :class:`Commands` overrides them, and adds
the AutoBatcher's own reads of keys checked already: a multi-key get
(:meth:`Commands.fetch_raw`) or a get per key (:meth:`Commands.fetch_each_op`),
whose ``_op`` forms return the command and its reader unsent, for a pipeline
(:mod:`greenpool._pipeline`). A reader
reads its command's whole reply: on a complete error reply it reads the rest of
its own replies first, then raises with the connection in step
(:data:`greenpool._reply.IN_STEP`); on anything that fits no reply it raises at
once, and the connection is cut.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable
from typing import TYPE_CHECKING, Any, NoReturn, Optional, TypeVar

from pymemcache.client.base import (
    STORE_RESULTS_VALUE,
    VALID_STORE_RESULTS,
    _readline,
    _readsegment,
)
from pymemcache.exceptions import MemcacheIllegalInputError, MemcacheUnknownError

from greenpool._checks import check_memcached_integer
from greenpool._reply import (
    IN_STEP,
    Exchange,
    Outcome,
    Value,
    complete_error,
    fits,
    read_values,
    value_header,
)

__all__ = ["Commands"]

T = TypeVar("T")


class Commands:
    """pymemcache's command paths for :class:`greenpool.Client` (a mixin)."""

    if TYPE_CHECKING:
        serde: Any
        ignore_exc: bool
        key_prefix: bytes
        encoding: str
        _fast_values: bool

        def check_key(self, key: Any, key_prefix: bytes) -> bytes: ...
        def _check_integer(self, value: Any, name: str) -> bytes: ...
        def _extract_value(self, *args: Any) -> Any: ...
        def _raise_errors(self, line: bytes, name: bytes) -> None: ...
        def _error(self, line: bytes, name: bytes, buf: bytes, last: bool) -> NoReturn: ...
        def _error_of(self, line: bytes, name: bytes) -> Exception: ...
        def close(self) -> None: ...
        def _exchange(
            self,
            cmd: bytes,
            read: Callable[[Any], tuple[T, bytes]],
            ignored: Optional[T] = None,
            noreply: bool = False,
        ) -> T: ...

    def _fetch_cmd(
        self, name: bytes, keys: Iterable[Any], expect_cas: bool, key_prefix: bytes = b""
    ) -> dict[Any, Any]:
        keys = list(keys)  # iterated twice
        prefixed_keys = [self.check_key(k, key_prefix=key_prefix) for k in keys]
        remapped_keys = dict(zip(prefixed_keys, keys, strict=True))
        if name in (b"get", b"gets") and self._fast_values:
            values = self._get(name, prefixed_keys, remapped_keys, expect_cas)
            try:  # the reply was read to its end: a serde's error costs no connection
                deserialize = self.serde.deserialize
                if expect_cas:
                    return {
                        remapped_keys[k]: (deserialize(remapped_keys[k], data, flags), token)
                        for k, (flags, data, token) in values.items()
                    }
                return {
                    remapped_keys[k]: deserialize(remapped_keys[k], data, flags)
                    for k, (flags, data, _) in values.items()
                }
            except Exception:
                if self.ignore_exc:
                    return {}
                raise

        def read(sock: Any) -> tuple[dict[Any, Any], bytes]:
            """pymemcache's way: line by line, each value decoded as it is read."""
            result: dict[Any, Any] = {}
            buf = b""
            while True:
                buf, line = _readline(sock, buf)
                if line == b"END" or line == b"OK":
                    return result, buf
                if line.startswith(b"VALUE"):
                    value_header(line, expect_cas)  # checked before the subclass reads on
                    key, value, buf = self._extract_value(
                        expect_cas, line, buf, remapped_keys, prefixed_keys
                    )
                    result[key] = value
                elif name == b"stats" and line.startswith(b"STAT"):
                    stat = line.split()
                    result[stat[1]] = stat[2] if len(stat) > 2 else b""
                elif name == b"stats" and line.startswith(b"ITEM"):  # stats cachedump
                    stat = line.split()
                    result[stat[1]] = b" ".join(stat[2:])
                else:
                    self._error(line, name, buf, last=len(prefixed_keys) <= 1)

        return self._exchange(name + b"".join(b" " + k for k in prefixed_keys) + b"\r\n", read, {})

    def fetch_raw(self, wire_keys: list[bytes], cas: bool = False) -> dict[bytes, Value]:
        """One ``get`` (``gets`` with *cas*) of *wire_keys*, keys as sent (checked and
        prefixed already); return what memcached found, undecoded, by key:
        ``(flags, data, cas token or None)``. What the AutoBatcher sends."""
        return self._exchange(*self.fetch_raw_op(wire_keys, cas))

    def fetch_raw_op(
        self, wire_keys: list[bytes], cas: bool = False
    ) -> Exchange[dict[bytes, Value]]:
        """:meth:`fetch_raw`'s command and reply reader, for a pipeline."""
        return self._get_op(b"gets" if cas else b"get", wire_keys, frozenset(wire_keys), cas)

    def fetch_each_op(self, wire_keys: list[bytes], cas: bool = False) -> Exchange[list[Outcome]]:
        """A ``get`` (``gets`` with *cas*) of each of *wire_keys* (checked and
        prefixed already), all in one write: each key's own outcome, in order:
        its value (as :meth:`fetch_raw`'s), ``None`` for a miss, or the
        ``MemcacheServerError`` its own command got. A proxy fails a multi-key
        get whole when one of its backends is down; asked so, each key gets what
        its backend gives. Any other failure cuts the connection and raises."""
        name = b"gets" if cas else b"get"

        def read(sock: Any) -> tuple[list[Outcome], bytes]:
            outcomes: list[Outcome] = []
            rest = b""
            for wire in wire_keys:
                values, line, rest = read_values(sock.recv, cas, rest)
                if line == b"END" and len(values) <= 1:
                    got = values.get(wire)
                    if got is None and values:
                        raise MemcacheUnknownError(
                            f"a value for a key not asked for: {values!r:.60}"
                        )
                    outcomes.append(got)
                elif line.startswith(b"SERVER_ERROR") and not values:
                    outcomes.append(self._error_of(line, name))
                else:
                    self._error(line, name, rest, last=False)
            return outcomes, rest

        return b"".join(b"%b %b\r\n" % (name, wire) for wire in wire_keys), read

    def _get(
        self, name: bytes, wire_keys: list[bytes], asked: Container[bytes], cas: bool
    ) -> dict[bytes, Value]:
        """Send a get or gets of *wire_keys* and read its reply to its end."""
        return self._exchange(*self._get_op(name, wire_keys, asked, cas), {})

    def _get_op(
        self, name: bytes, wire_keys: list[bytes], asked: Container[bytes], cas: bool
    ) -> Exchange[dict[bytes, Value]]:
        """A get or gets of *wire_keys* and the reader of its reply; a value for a
        key not *asked* for means the connection was out of step."""

        def read(sock: Any) -> tuple[dict[bytes, Value], bytes]:
            values, line, rest = read_values(sock.recv, cas)
            if line != b"END":
                self._error(line, name, rest, last=len(wire_keys) <= 1)
            for key in values:
                if key not in asked:
                    raise MemcacheUnknownError(f"a value for a key not asked for: {key!r}")
            return values, rest

        return b"%b %b\r\n" % (name, b" ".join(wire_keys)), read

    def _store_cmd(
        self,
        name: bytes,
        values: dict[Any, Any],
        expire: int,
        noreply: bool,
        flags: Optional[int] = None,
        cas: Optional[bytes] = None,
    ) -> dict[Any, Optional[bool]]:
        extra = (b" " + cas if cas is not None else b"") + (b" noreply" if noreply else b"")
        expire_bytes = self._check_integer(expire, "expire")
        if flags is not None:
            check_memcached_integer("flags", flags)
        keys, cmds = [], []
        for key, data in values.items():
            keys.append(key)  # replies come in this order
            key = self.check_key(key, self.key_prefix)
            data, data_flags = self.serde.serialize(key, data)
            if flags is not None:  # the caller's flags override the serde's
                data_flags = flags
            else:
                check_memcached_integer("flags", data_flags)
            if not isinstance(data, bytes):
                try:
                    data = str(data).encode(self.encoding)
                except UnicodeEncodeError as e:
                    raise MemcacheIllegalInputError(f"Data values must be binary-safe: {e}") from e
            head = b"%b %b %d %b %d%b\r\n" % (name, key, data_flags, expire_bytes, len(data), extra)
            cmds.append(head + data + b"\r\n")

        def read(sock: Any) -> tuple[dict[Any, Optional[bool]], bytes]:
            if noreply:
                return dict.fromkeys(keys, True), b""
            results: dict[Any, Optional[bool]] = {}
            failed: Optional[Exception] = None
            buf = b""
            for key in keys:
                buf, line = _readline(sock, buf)
                if line in VALID_STORE_RESULTS[name]:
                    results[key] = STORE_RESULTS_VALUE[line]
                elif complete_error(line, name):  # read the other replies, then raise it
                    failed = failed or self._error_of(line, name)
                else:
                    self._error(line, name, buf, last=False)
            if failed is not None:
                setattr(failed, IN_STEP, buf)
                raise failed
            return results, buf

        return self._exchange(b"".join(cmds), read, noreply=noreply)

    def _misc_cmd(
        self,
        cmds: Iterable[bytes],
        cmd_name: bytes,
        noreply: Optional[bool],
        end_tokens: Optional[bytes] = None,
    ) -> list[bytes]:
        cmds = list(cmds)
        if end_tokens and any(b"\r" in cmd[:-2] or b"\n" in cmd[:-2] for cmd in cmds):
            raise MemcacheIllegalInputError(
                f"a raw command is one line, without \\r or \\n: {cmds[0][:60]!r}"
            )

        def read(sock: Any) -> tuple[list[bytes], bytes]:
            results: list[bytes] = []
            failed: Optional[Exception] = None
            buf = b""
            for _ in range(0 if noreply else len(cmds)):
                if end_tokens:
                    buf, line = _readsegment(sock, buf, end_tokens)
                    self._raise_errors(line, cmd_name)
                else:
                    buf, line = _readline(sock, buf)
                    if not fits(cmd_name, line):
                        if not complete_error(line, cmd_name):
                            self._error(line, cmd_name, buf, last=False)
                        failed = failed or self._error_of(line, cmd_name)
                results.append(line)
            if failed is not None:  # every reply read: the connection is in step
                setattr(failed, IN_STEP, buf)
                raise failed
            # A raw reply's end is the caller's guess: what follows is not checked,
            # and the connection is closed below, never reused.
            return results, b"" if end_tokens else buf

        results = self._exchange(b"".join(cmds), read, noreply=bool(noreply))
        if end_tokens and not noreply:
            self.close()
        return results
