"""Waiting on a condition with a bounded deadline: the only way the tests wait for something."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: How often a condition is checked unless the caller says otherwise (seconds).
POLL_INTERVAL = 0.02


class Timeout(AssertionError, TimeoutError):
    """A condition did not hold in time.

    An AssertionError, so that a test fails (rather than errors) on it, and a TimeoutError, so
    that code written against `asyncio.wait_for`-style timeouts still catches it.
    """


async def eventually(
    predicate: Callable[[], T | Awaitable[T]],
    *,
    timeout: float,
    what: str | Callable[[], str],
    interval: float = POLL_INTERVAL,
) -> T:
    """Poll `predicate` (sync or async) until it returns something truthy, and return that.

    Raises `Timeout`, naming `what` (a string, or a function called only then for a message
    with the state at that moment) and the predicate's last value, when `timeout` seconds pass
    first. The predicate is always called at least once, and once more at the deadline, so a
    condition that holds by then is never reported as a timeout. Exceptions the predicate
    raises propagate at once (a predicate may raise to stop the wait early).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        remaining = deadline - loop.time()
        if remaining <= 0:
            description = what() if callable(what) else what
            raise Timeout(f"timed out after {timeout:g} s waiting for {description}; last value: {value!r}")
        await asyncio.sleep(min(interval, remaining))


async def wait_until(predicate: Callable[[], T | Awaitable[T]], timeout: float, what: str) -> T:
    """`eventually` with positional arguments, for callers written as `wait_until(pred, 5, "...")`."""
    return await eventually(predicate, timeout=timeout, what=what)
