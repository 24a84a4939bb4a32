"""Bad arguments get TypeError or ValueError naming the parameter."""

from __future__ import annotations

import math
from typing import Any

import pytest

from greenpool import ClientPool


def factory() -> Any:
    return object()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"maxsize": 0}, ValueError, "maxsize must be at least 1, got 0"),
        ({"maxsize": -3}, ValueError, "maxsize must be at least 1"),
        ({"maxsize": 2.5}, TypeError, "maxsize must be an int, not float"),
        ({"maxsize": "4"}, TypeError, "maxsize must be an int, not str"),
        ({"maxsize": True}, TypeError, "maxsize must be an int, not bool"),
        ({"factory": None}, TypeError, "factory must be a zero-argument callable"),
        ({"factory": "client"}, TypeError, "factory must be .* not str"),
        ({"timeout": -1}, ValueError, "timeout must be a non-negative number of seconds, got -1"),
        ({"timeout": math.nan}, ValueError, "timeout must be a non-negative"),
        ({"timeout": "5"}, TypeError, "timeout must be a number of seconds, not str"),
        ({"timeout": None}, TypeError, "timeout must be a number of seconds, not NoneType"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, Any], error: type, message: str) -> None:
    arguments: dict[str, Any] = {"factory": factory, "maxsize": 2, **kwargs}
    with pytest.raises(error, match=message):
        ClientPool(**arguments)


@pytest.mark.parametrize(
    ("timeout", "error", "message"),
    [
        (-0.5, ValueError, "timeout must be a non-negative number of seconds, got -0.5"),
        ("1", TypeError, "timeout must be a number of seconds, not str"),
        ([], TypeError, "timeout must be a number of seconds, not list"),
    ],
)
def test_bad_reserve_timeout(timeout: Any, error: type, message: str) -> None:
    pool = ClientPool(factory, 1)
    with pytest.raises(error, match=message):
        pool.reserve(timeout=timeout)
    assert pool.stats()["in_use"] == 0


def test_a_factory_returning_none_is_named(memcached: Any) -> None:
    pool = ClientPool(lambda: None, 1, name="nones")
    with pytest.raises(TypeError, match="factory of pool 'nones' returned None"), pool.reserve():
        pass
    assert pool.stats()["in_use"] == 0 and pool.stats()["size"] == 0
