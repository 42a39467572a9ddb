"""The browser's front door: an optional token, the Host header, the origin of writes, and body sizes.

- Token: when one is set, every request but `GET /health` must carry it, as
  `Authorization: Bearer TOKEN`, an `X-Cafe-Token` header, `?token=TOKEN`, or the cookie
  the page gets. Opening `/?token=TOKEN` once sets that cookie (HttpOnly, SameSite=Strict)
  and redirects to the same page without the token in its address. Missing: 401; wrong: 403.
- Host: a server bound to a loopback address answers only to loopback host names, so a web
  page elsewhere cannot reach it through DNS rebinding.
- Origin: a flag change (POST, DELETE) sent by a page of another origin is refused, so a
  site open in the same browser cannot flag samples.
- Size: a request body over `max_body_bytes` is refused with 413, by its Content-Length when it
  has one, else as soon as the bytes received pass the limit; the rest is never read.

The size limit is the training service's idea (`cafe_service.guard`), kept apart: services do not
import each other.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.exceptions import HTTPException

COOKIE = "cafe_inspector_token"
OPEN_PATHS = ("/health",)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
# A flag request is under 1 KB (a set name, a key, a reason of at most 500 characters).
DEFAULT_MAX_BODY_BYTES = 16 * 1024
MIN_MAX_BODY_BYTES = 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):  # [::1]:8765
        return host_header.split("]", 1)[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _cookies(header: str) -> dict[str, str]:
    pairs = (part.strip().split("=", 1) for part in header.split(";") if "=" in part)
    return {name: value for name, value in pairs}


def too_large_message(limit: int) -> str:
    return (
        f"the request body is larger than {limit} bytes, the limit of this shard browser "
        "(`cafe inspect serve --max-body-kb`)"
    )


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a body without Content-Length passes the limit. An HTTPException, so
    FastAPI's body parsing lets it through (other errors there become 400) and answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large_message(limit))


class Guard:
    """ASGI middleware; `token=None` turns the token check off, `allowed_hosts=None` the Host check.

    max_body_bytes: larger request bodies are refused with 413 (at least 1024)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        allowed_hosts: Sequence[str] | None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if token is not None and len(token) < 8:
            raise ValueError(
                "token: use at least 8 characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)"
            )
        if max_body_bytes < MIN_MAX_BODY_BYTES:
            raise ValueError(
                f"max_body_bytes: {max_body_bytes} must be >= {MIN_MAX_BODY_BYTES} (`--max-body-kb 1` or more)"
            )
        self.app = app
        self.token = token
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if self.allowed_hosts is not None and _host_name(host).lower() not in self.allowed_hosts:
            allowed = ", ".join(sorted(self.allowed_hosts))
            await _answer(
                send, 400, f"Host {host!r} is not served here; open the page as http://{allowed.split(', ')[0]}:PORT/"
            )
            return
        if scope["method"] not in SAFE_METHODS:
            origin = headers.get("origin")
            if origin and urlsplit(origin).netloc != host:
                await _answer(send, 403, f"writes from origin {origin!r} are refused; use the page served here")
                return
        if self.token is None or scope["path"] in OPEN_PATHS:
            await self._within_size(scope, receive, send, headers)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        from_query = next((v for k, v in query if k == "token"), None)
        authorization = headers.get("authorization", "")
        given = (
            (authorization[7:].strip() if authorization.lower().startswith("bearer ") else None)
            or headers.get("x-cafe-token")
            or from_query
            or _cookies(headers.get("cookie", "")).get(COOKIE)  # last: a token given explicitly wins
        )
        if not given:
            await _answer(
                send,
                401,
                "this shard browser needs its token: open /?token=TOKEN once in the browser, "
                "or send 'Authorization: Bearer TOKEN' (the token was given to `cafe inspect serve`)",
                extra=[(b"www-authenticate", b"Bearer")],
            )
            return
        if not secrets.compare_digest(given.encode(), self.token.encode()):
            await _answer(send, 403, "wrong token; use the one given to `cafe inspect serve --token`")
            return
        if from_query is not None and scope["path"] == "/" and scope["method"] == "GET":
            # Trade the token in the address for a cookie, then drop it from the address bar.
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
            await _answer(
                send,
                303,
                "",
                extra=[(b"location", ("/?" + rest if rest else "/").encode()), (b"set-cookie", cookie.encode())],
            )
            return
        await self._within_size(scope, receive, send, headers)

    async def _within_size(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        """The app, if the body fits: refused at once by its Content-Length, else counted as it arrives."""
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _answer(send, 400, f"Content-Length {declared!r} is not a number")
                return
            if int(declared) > self.max_body_bytes:
                await _answer(send, 413, too_large_message(self.max_body_bytes))
                return
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

        await self.app(scope, counted, send)


async def _answer(send: Send, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode() if detail else b""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
