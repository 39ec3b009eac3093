"""The browser chat page and the knowledge-graph page: static files shipped in the package (no CDN,
nothing fetched at run time; Cytoscape.js is vendored under ui/vendor/), open without a key (the
pages ask for one and keep it in sessionStorage), served under a strict Content-Security-Policy:
scripts and styles from this origin only, no inline script, no framing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

router = APIRouter()
FILES = {
    "/ui": ("index.html", "text/html; charset=utf-8"),
    "/ui/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/ui/app.css": ("app.css", "text/css; charset=utf-8"),
    "/ui/mic.js": ("mic.js", "text/javascript; charset=utf-8"),
    "/ui/graph": ("graph.html", "text/html; charset=utf-8"),
    "/ui/graph.js": ("graph.js", "text/javascript; charset=utf-8"),
    "/ui/vendor/cytoscape.min.js": ("vendor/cytoscape.min.js", "text/javascript; charset=utf-8"),
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {"Content-Security-Policy": CSP}  # the other security headers are every response's (observe.py)
_CONTENT = {path: (resources.files("moltbot.gateway") / "ui" / name).read_bytes() for path, (name, _) in FILES.items()}


def _static(path: str) -> Callable[[], Awaitable[Response]]:
    media_type = FILES[path][1]

    async def serve() -> Response:
        return Response(_CONTENT[path], media_type=media_type, headers=HEADERS)

    return serve


for _path in FILES:
    router.add_api_route(_path, _static(_path), methods=["GET"], include_in_schema=False)


@router.get("/", include_in_schema=False)
async def home() -> Response:
    return RedirectResponse("/ui", status_code=307, headers=HEADERS)


@router.get("/favicon.ico", include_in_schema=False)
async def favicon() -> Response:
    """No icon (browsers ask for one on every page)."""
    return Response(status_code=204)
