"""The service's front door: the bearer token, the request size limit, and the data roots.

- Token: every request but `GET /health` must carry `Authorization: Bearer TOKEN`; missing or wrong
  is 401 (compared in constant time), with the fix in the message.
- Size: a request body over `max_body_bytes` is refused with 413, by its Content-Length when it has
  one, else as soon as the bytes received pass the limit.
- Roots: every path a spec names must resolve inside one of the configured data roots. A path with a
  `..` part is refused (422); one that is absolute outside the roots, or leads out through a symlink,
  resolves outside them (403). Relative paths are taken relative to the first root. The answer names
  the spec field.

The idea is the shard browser's (`cafe_inspector.guard`), kept apart: services do not import each other.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException

from cafe_service.errors import BadValue, OutsideRoots

OPEN_PATHS = ("/health",)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def too_large_message(limit: int) -> str:
    return f"the request body is larger than {limit} bytes, the limit of this service (`cafe serve --max-body-kb`)"


class PathGuard:
    """Resolves spec paths and keeps them inside `roots` (existing folders, resolved)."""

    def __init__(self, roots: Sequence[Path]) -> None:
        self.roots = [Path(root).resolve(strict=True) for root in roots]

    def describe_roots(self) -> str:
        return ", ".join(str(root) for root in self.roots)

    def check(self, field: str, value: str) -> Path:
        """The absolute, resolved path `value` names; BadValue or OutsideRoots naming `field` otherwise."""
        if not isinstance(value, str) or not value.strip():
            raise BadValue(f"{field}: give a path inside the data roots ({self.describe_roots()})", field)
        if "\x00" in value:
            raise BadValue(f"{field}: a path cannot contain a NUL character", field)
        if "://" in value:
            raise BadValue(
                f"{field}: {value!r} is a URL; the service takes paths inside its data roots ({self.describe_roots()})",
                field,
            )
        path = Path(value)
        if ".." in path.parts:
            raise BadValue(
                f"{field}: {value!r} contains '..'; give a path inside the data roots ({self.describe_roots()})",
                field,
            )
        if not path.is_absolute():
            path = self.roots[0] / path
        # resolve() follows every symlink that exists along the path, so a link leading out is caught here.
        resolved = path.resolve()
        if any(resolved == root or resolved.is_relative_to(root) for root in self.roots):
            return resolved
        raise OutsideRoots(
            f"{field}: {value!r} resolves outside the data roots ({self.describe_roots()}); "
            "absolute paths and symlinks must stay inside a root given to `cafe serve --root`",
            field,
        )


async def answer(send: Send, status: int, error: str, field: str | None, extra: Sequence[tuple[bytes, bytes]] = ()):
    """A JSON error answer in the service's shape, written straight to ASGI."""
    body = json.dumps({"error": error, "field": field}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: the bearer token on every path but /health, and the body size limit."""

    def __init__(self, app: ASGIApp, *, token: str, max_body_bytes: int) -> None:
        if not token:
            raise ValueError("token: the service always needs one")
        self.app = app
        self.token = token.encode()
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if scope["path"] not in OPEN_PATHS:
            authorization = headers.get("authorization", "")
            scheme, _, given = authorization.partition(" ")
            if scheme.lower() != "bearer" or not given.strip():
                await answer(
                    send,
                    401,
                    "this service needs its token: send 'Authorization: Bearer TOKEN' (the token given to "
                    "`cafe serve --token` or CAFE_SERVICE_TOKEN; clients read --token or CAFE_SERVICE_TOKEN)",
                    "authorization",
                    [(b"www-authenticate", b"Bearer")],
                )
                return
            if not secrets.compare_digest(given.strip().encode(), self.token):
                await answer(
                    send,
                    401,
                    "wrong token; use the one given to `cafe serve --token` (or CAFE_SERVICE_TOKEN)",
                    "authorization",
                    [(b"www-authenticate", b'Bearer error="invalid_token"')],
                )
                return
        declared = headers.get("content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_body_bytes
            except ValueError:
                await answer(send, 400, f"Content-Length {declared!r} is not a number", "content-length")
                return
            if too_large:
                await self._too_large(send)
                return
        await self.app(scope, self._counting(receive, send), send)

    async def _too_large(self, send: Send) -> None:
        await answer(send, 413, too_large_message(self.max_body_bytes), "body")

    def _counting(self, receive: Receive, send: Send) -> Receive:
        """`receive`, refusing a body without Content-Length once it passes the limit."""
        seen = 0
        limit = self.max_body_bytes

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        return counted


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes the limit. An HTTPException, so FastAPI's body
    parsing lets it through (other errors there become 400) and the app answers 413 naming the body."""

    field = "body"

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large_message(limit))
