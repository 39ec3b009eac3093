"""Stop a request's work when its client goes away before the reply (non-streaming requests).

A streamed reply notices a departed client when it next writes; a plain JSON reply writes only at the
end, so its generation would run to `max_tokens` for nobody and hold a slot meanwhile. The request's
work runs beside a watcher of the connection; when the client leaves, the work is cancelled (closing
its engine streams, which cancels their sequences at the engine's next step).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.requests import Request

T = TypeVar("T")


class ClientDisconnectedError(Exception):
    """The client closed the connection before the reply was ready; the work was cancelled."""


async def _disconnected(request: Request) -> None:
    """Return once the client has gone (the body was already read, so only a disconnect can arrive)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """The result of `work`, or ClientDisconnectedError once the client has left (the work cancelled)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ClientDisconnectedError("the client closed the connection")
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
