"""Replies are trusted no further than memcached's protocol allows.

A ``VALUE`` header's fields are checked before its data is read: a size that is
negative, past 1 GiB or not a number, a header with fields missing, or flags
and cas tokens that are not numbers are ``MemcacheUnknownError`` naming the
line, and the connection is cut as for any reply that does not fit its command.
The faults are put on the wire by a proxy in front of a real memcached.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from pymemcache.exceptions import MemcacheUnknownError

from greenpool import ClientPool, client_factory
from tests.proxy import FaultProxy

Key = Callable[[str], str]

HEADERS = {
    "negative size": b"VALUE %s 0 -2\r\nEND\r\n",
    "absurd size": b"VALUE %s 0 99999999999999\r\n",
    "size past 1 GiB": b"VALUE %s 0 1073741825\r\n",
    "no size": b"VALUE %s 0\r\nEND\r\n",
    "size not a number": b"VALUE %s 0 1x\r\nx\r\nEND\r\n",
    "flags not a number": b"VALUE %s -1 1\r\nx\r\nEND\r\n",
    "a field too many": b"VALUE %s 0 1 2 3\r\nx\r\nEND\r\n",
}


@pytest.mark.parametrize("header", list(HEADERS))
@pytest.mark.parametrize("command", ["get", "get_many"])
def test_a_value_header_that_does_not_parse_cuts_the_connection_and_names_the_line(
    proxy: FaultProxy, key: Key, header: str, command: str
) -> None:
    """The command raises MemcacheUnknownError naming the header, its client is
    discarded, and the next command reads its own reply."""
    pool: ClientPool[Any] = ClientPool(client_factory(proxy.address), 1)
    wire = key("v").encode()
    with pool.reserve() as mc:
        mc.set(key("v"), b"right", noreply=False)
    injected = HEADERS[header] % wire
    proxy.inject(injected)
    line = injected.split(b"\r\n")[0].decode()
    with pytest.raises(MemcacheUnknownError, match=re.escape(line)), pool.reserve() as mc:
        if command == "get":
            mc.get(key("v"))
        else:
            mc.get_many([key("v"), key("other")])
    stats = pool.stats()
    assert (stats["discarded_error"], stats["in_use"]) == (1, 0)
    with pool.reserve() as mc:
        assert mc.get(key("v")) == b"right"


def test_a_gets_header_without_its_cas_token_does_not_parse(proxy: FaultProxy, key: Key) -> None:
    pool: ClientPool[Any] = ClientPool(client_factory(proxy.address), 1)
    proxy.inject(b"VALUE %s 0 1\r\nx\r\nEND\r\n" % key("v").encode())
    line = re.escape(f"VALUE {key('v')} 0 1")
    with pytest.raises(MemcacheUnknownError, match=line), pool.reserve() as mc:
        mc.gets(key("v"))
    assert pool.stats()["discarded_error"] == 1


def test_an_incr_reply_longer_than_a_64_bit_number_does_not_fit(
    proxy: FaultProxy, key: Key
) -> None:
    pool: ClientPool[Any] = ClientPool(client_factory(proxy.address), 1)
    with pool.reserve() as mc:
        mc.set(key("n"), b"1", noreply=False)
    proxy.inject(b"1" * 21 + b"\r\n")
    with pytest.raises(MemcacheUnknownError, match="1" * 21), pool.reserve() as mc:
        mc.incr(key("n"), 1)
    assert pool.stats()["discarded_error"] == 1
