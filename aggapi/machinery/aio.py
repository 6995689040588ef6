"""`within`: await with a deadline. Used instead of `asyncio.wait_for`, which on Python 3.11 can swallow
a cancellation that races with the awaited result (fixed in 3.12), leaving tasks that never stop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(aw: Awaitable[T], seconds: float | None) -> T:
    async with asyncio.timeout(seconds):
        return await aw
