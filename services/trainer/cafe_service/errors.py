"""Errors the API answers with: a status, a message naming the bad value and the fix, and the field.

Every 4xx body has the same shape, `{"error": MESSAGE, "field": FIELD_OR_NULL}`, so a client can
point at the offending part of its request (`field` is dotted: `overrides.model_cache_dir`, `shards.1`).
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """An answer other than success. `status` is the HTTP status; `field` the part of the request at fault."""

    def __init__(self, status: int, error: str, field: str | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "field": self.field}


class BadValue(ServiceError):
    """A well-formed request with a value that is not allowed (422)."""

    def __init__(self, error: str, field: str | None = None) -> None:
        super().__init__(422, error, field)


class OutsideRoots(ServiceError):
    """A path that resolves outside every data root (403)."""

    def __init__(self, error: str, field: str) -> None:
        super().__init__(403, error, field)


class NotFound(ServiceError):
    def __init__(self, error: str, field: str | None = "id") -> None:
        super().__init__(404, error, field)


class Conflict(ServiceError):
    """The request does not fit the job's state (cancelling a finished job): 409."""

    def __init__(self, error: str, field: str | None = "id") -> None:
        super().__init__(409, error, field)


# Ids are SQLite rowids: 1 up to the largest signed 64-bit integer. Where each kind of id is listed.
MAX_ID = 2**63 - 1
ID_FIELDS = {"job_id": ("job", "GET /jobs"), "schedule_id": ("schedule", "GET /schedules")}


def _describe(error: dict[str, Any], field: str | None, kinds: tuple[str, ...]) -> str:
    kind = error["type"]
    allowed = ", ".join(kinds)
    if field in ID_FIELDS:
        what, listing = ID_FIELDS[field]
        return (
            f"{field}: {error.get('input')!r} is not a {what} id; "
            f"ids are whole numbers from 1 to {MAX_ID} (`{listing}` lists them)"
        )
    if kind == "union_tag_invalid":
        tag = error.get("ctx", {}).get("tag", error.get("input"))
        return f"kind: {tag!r} is not a job kind; use one of {allowed}"
    if kind == "union_tag_not_found":
        return f"kind: missing; every spec names its kind, one of {allowed}"
    if kind == "missing":
        return f"{field}: required, and missing"
    if kind == "extra_forbidden":
        return f"{field}: not a field of this spec (a typo?)"
    if kind == "json_invalid":
        return f"the body is not valid JSON: {error['msg']}"
    where = f"{field}: " if field else ""
    return f"{where}{error['msg']} (got {error.get('input')!r})"


def validation_body(errors: list[dict[str, Any]], kinds: tuple[str, ...]) -> dict[str, Any]:
    """pydantic's errors as `{"error", "field", "problems"}`: the first problem on top, each with its field.

    `field` is the dotted location in the body, without pydantic's `body` and job-kind parts
    (`("body", "train", "shards", 1)` -> `shards.1`)."""
    problems = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path"):
            loc = loc[1:]
        if loc and loc[0] in kinds:
            loc = loc[1:]
        if error["type"] == "json_invalid":
            loc = []
        field = ".".join(loc) or None
        if error["type"].startswith("union_tag"):
            field = "kind"
        problems.append({"error": _describe(error, field, kinds), "field": field})
    first = problems[0] if problems else {"error": "invalid request", "field": None}
    return {**first, "problems": problems}
