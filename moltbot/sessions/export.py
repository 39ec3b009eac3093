"""The export format of a session (the API's export/import and the CLI share it)."""

from __future__ import annotations

from typing import Any

from moltbot.storage.sessions import Session

EXPORT_VERSION = 1


def export_document(session: Session) -> dict[str, Any]:
    return {
        "object": "session.export",
        "version": EXPORT_VERSION,
        "model": session.model,
        "title": session.title,
        "metadata": session.metadata,
        "system_prompt": session.system_prompt,
        "created_at": session.created_at,
        "messages": [
            {"role": m.role, "content": m.content, "status": m.status, "created_at": m.created_at}
            for m in session.messages
        ],
    }
