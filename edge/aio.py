"""A timeout wrapper that is safe to cancel (shared by the edge components)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(aw: Awaitable[T], seconds: float) -> T:
    """`await aw`, raising TimeoutError after `seconds`. Used instead of asyncio.wait_for, which on
    Python 3.11 can swallow a cancellation that races with completion (gh-86296) and so leave a
    session task that never ends."""
    async with asyncio.timeout(seconds):
        return await aw
