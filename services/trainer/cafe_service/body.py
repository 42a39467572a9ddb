"""Request bodies as the API reads them: UTF-8 JSON, nested at most `MAX_DEPTH` levels, then a model.

    spec = read_json(await request.body(), request.headers.get("content-type"))   # BadValue naming "body"

FastAPI's own body parsing answers a body that is not UTF-8, or one nested deeper than Python's
recursion limit, with a bare 400 ("There was an error parsing the body"), and accepts a body nested
900 levels deep. The service reads its bodies here instead, so each of these is a 422 in the service's
error shape naming `body`, and nothing recursive ever sees a deep body: the depth is counted on the
text before `json.loads` runs.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from cafe_service.errors import BadValue

# The deepest spec is a loop's `train.gates.NAME: [..]`, 4 levels; 32 leaves room and stops nothing real.
MAX_DEPTH = 32
JSON_TYPES = ("application/json",)

T = TypeVar("T")


def too_deep_at(text: str, limit: int) -> int:
    """The index in the JSON `text` where `[` / `{` nesting first passes `limit`, or -1 if it never does.

    Brackets inside strings do not count. A loop over the text, not a parser: it cannot recurse."""
    depth = 0
    in_string = escaped = False
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return index
        elif char in "]}":
            depth -= 1
    return -1


def read_json(raw: bytes, content_type: str | None) -> Any:
    """The JSON value of a request body; BadValue (422, field `body`) when it is not UTF-8 JSON within MAX_DEPTH."""
    media_type = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if media_type not in JSON_TYPES and not media_type.endswith("+json"):
        raise BadValue(f"the body is {media_type!r}; send JSON with 'Content-Type: application/json'", "content-type")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1].hex()
        raise BadValue(
            f"the body is not UTF-8 (byte 0x{bad} at offset {exc.start}); send JSON encoded as UTF-8", "body"
        ) from None
    text = text.removeprefix("\ufeff")  # a UTF-8 byte order mark: allowed, and ignored (RFC 8259 section 8.1)
    passed_at = too_deep_at(text, MAX_DEPTH)
    if passed_at >= 0:
        raise BadValue(
            f"the body is nested more than {MAX_DEPTH} levels deep (at character {passed_at}); "
            f"a job spec needs a few levels, at most {MAX_DEPTH} are read",
            "body",
        )
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadValue(
            f"the body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", "body"
        ) from None


def json_body(adapter: TypeAdapter[T]) -> Callable[[Request], Awaitable[T]]:
    """A FastAPI dependency: the request body read by `read_json`, then validated by `adapter`.

    A malformed value raises RequestValidationError with pydantic's errors under `body`, so the
    app's handler answers 422 naming the field, as for any other request argument."""

    async def parse(request: Request) -> T:
        value = read_json(await request.body(), request.headers.get("content-type"))
        try:
            return adapter.validate_python(value)
        except ValidationError as exc:
            errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
            raise RequestValidationError(errors) from None

    return parse
