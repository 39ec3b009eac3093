"""Stored responses (the Responses API's `store`): saved, read back, deleted, owner-scoped; and the
conversation a `previous_response_id` stands for (each earlier response's input and output, oldest
first), so that a chained request renders the same prompt prefix and the KV cache finds it computed."""

from __future__ import annotations

import asyncio
from typing import Any

from moltbot.errors import MoltbotError
from moltbot.storage.responses import ResponseRepository, StoredResponse

MAX_CHAIN = 256  # responses a previous_response_id may reach back through


class ResponseNotFoundError(MoltbotError):
    """No stored response of that id belongs to the caller."""

    def __init__(self, response_id: str, param: str = "response_id") -> None:
        super().__init__(f"no response {response_id}", param=param)


class ResponseService:
    def __init__(self, repo: ResponseRepository) -> None:
        self.repo = repo

    async def get(self, owner: str, response_id: str) -> StoredResponse:
        found = await asyncio.to_thread(self.repo.get, owner, response_id)
        if found is None:
            raise ResponseNotFoundError(response_id)
        return found

    async def delete(self, owner: str, response_id: str) -> None:
        if not await asyncio.to_thread(self.repo.delete, owner, response_id):
            raise ResponseNotFoundError(response_id)

    async def save(self, owner: str, response_id: str, **fields: Any) -> None:
        await asyncio.to_thread(self.repo.save, owner, response_id, **fields)

    async def conversation(self, owner: str, previous_id: str) -> list[dict[str, Any]]:
        """The items of the chain ending at `previous_id`: each response's input then its output."""
        return await asyncio.to_thread(self._conversation, owner, previous_id)

    def _conversation(self, owner: str, previous_id: str) -> list[dict[str, Any]]:
        chain: list[StoredResponse] = []
        current: str | None = previous_id
        while current is not None:
            if len(chain) >= MAX_CHAIN:
                raise ResponseNotFoundError(previous_id, "previous_response_id")  # too deep to follow
            found = self.repo.get(owner, current)
            if found is None:
                raise ResponseNotFoundError(current, "previous_response_id")
            chain.append(found)
            current = found.previous_id
        items: list[dict[str, Any]] = []
        for response in reversed(chain):
            items += response.input
            items += response.document.get("output", [])
        return items
