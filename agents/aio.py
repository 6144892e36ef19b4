"""Small asyncio helpers the workflows share."""

from __future__ import annotations

import asyncio


async def gather_all(coros):
    """Every result in order; the first failure cancels the rest (asyncio.gather would leave them running)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
