"""The shard browser's web app: one page and a small JSON API over a folder of shard sets.

    from cafe_inspector import create_app
    app = create_app("demo-output", token=None)          # then: uvicorn.run(app, host="127.0.0.1")

Or from the command line: `cafe inspect serve DIR`. Routes (all GET unless said):

    /                      the page (static/index.html, app.js, style.css)
    /health                liveness; the one route open without the token
    /api/sets              the sets under DIR with their counts
    /api/summary?set=      counts, rounds, reasons, score names of one set (dataset.json or stats.json)
    /api/stats?set=        `cafe shards stats` of the set (flags honoured)
    /api/samples?set=&offset=&limit=&round=&score=NAME:LOW:HIGH&subject=&reason=&flagged=any|only|exclude
    /api/samples/count?set=&(the same filters)    every match of a filter (stats.json only)
    /api/sample?set=&key=  one triple: metadata, prompt, its input's status row, its flag
    /api/image?set=&key=&kind=target|reference|mask|overlay&size=128|256|512|1024
    /api/inputs?set=&status=&reason=&offset=&limit=   per-input status rows; /api/inputs/count?set=&status=&reason=
    /api/flags?set=        the set's flags; POST {set, key, reason} flags, DELETE ?set=&key= unflags

Shards are only read. The one file written is each set's `flags.parquet` (cafe_core.flags).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict

from cafe_inspector.catalog import Catalog
from cafe_inspector.errors import InspectorError
from cafe_inspector.filters import SampleFilter
from cafe_inspector.guard import DEFAULT_MAX_BODY_BYTES, Guard
from cafe_inspector.sample_set import SampleSet

STATIC = Path(__file__).parent / "static"
DEFAULT_PAGE_SAMPLES = 24
MAX_PAGE_SAMPLES = 200
IMAGE_CACHE_CONTROL = "private, max-age=3600"  # sets are immutable; keys hash the image bytes

SetId = Annotated[str, Query(alias="set", description="the set's path below DIR, as /api/sets lists it")]
Offset = Annotated[int, Query(ge=0)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SAMPLES)]


class FlagRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    set: str
    key: str
    reason: str


def sample_filter(
    round_: Annotated[list[int], Query(alias="round")] = [],  # noqa: B006 - FastAPI reads the default, never mutates it
    score: Annotated[list[str], Query(description="NAME:LOW:HIGH, e.g. box:0.3: or quality.clip_t::0.2")] = [],  # noqa: B006
    subject: str = "",
    reason: str = "",
    flagged: str = "any",
) -> SampleFilter:
    """The filter a samples request names: rounds, score ranges, subject text, input reason, flags."""
    return SampleFilter.parse(rounds=round_, scores=score, subject=subject, reason=reason, flagged=flagged)


Filter = Annotated[SampleFilter, Depends(sample_filter)]


def create_app(
    root: str | Path,
    *,
    token: str | None = None,
    allowed_hosts: Sequence[str] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Guard:
    """The ASGI app serving the sets under `root`.

    token: when given, every request but /health must carry it (see cafe_inspector.guard).
    allowed_hosts: Host header names answered (None: any); `cafe inspect serve` passes the
        loopback names when it binds a loopback address.
    max_body_bytes: request bodies over this are refused with 413 before they are read whole
        (`cafe inspect serve --max-body-kb`; a flag request is under 1 KB).
    Returns the FastAPI app wrapped in the guard; `.app` of the result is the FastAPI app.
    """
    catalog = Catalog(root)
    api = FastAPI(title="cafe shard browser", docs_url=None, redoc_url=None, openapi_url=None)
    api.state.catalog = catalog

    @api.exception_handler(InspectorError)
    async def inspector_error(_: Request, exc: InspectorError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @api.exception_handler(RequestValidationError)
    async def bad_arguments(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"detail": problems}, status_code=400)

    api.mount("/static", StaticFiles(directory=STATIC), name="static")

    @api.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    @api.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/api/sets")
    def sets() -> dict[str, Any]:
        return {"root": str(catalog.root), "sets": catalog.list_sets()}

    @api.get("/api/summary")
    def summary(set_id: SetId) -> dict[str, Any]:
        return catalog.get(set_id).summary()

    @api.get("/api/stats")
    def stats(set_id: SetId) -> dict[str, Any]:
        return catalog.get(set_id).stats()

    @api.get("/api/samples")
    def samples(
        set_id: SetId, filters: Filter, offset: Offset = 0, limit: Limit = DEFAULT_PAGE_SAMPLES
    ) -> dict[str, Any]:
        return {"set": set_id, **catalog.get(set_id).page(filters, offset, limit).to_json()}

    @api.get("/api/samples/count")
    def count_samples(set_id: SetId, filters: Filter) -> dict[str, Any]:
        return {"set": set_id, **catalog.get(set_id).count(filters)}

    @api.get("/api/sample")
    def sample(set_id: SetId, key: str) -> dict[str, Any]:
        return {"set": set_id, **catalog.get(set_id).detail(key)}

    @api.get("/api/image")
    def image(set_id: SetId, key: str, kind: str = "target", size: int = 256) -> Response:
        thumbnail = catalog.thumbnail(set_id, key, kind, size)
        return Response(thumbnail.data, media_type=thumbnail.media_type, headers={"cache-control": IMAGE_CACHE_CONTROL})

    @api.get("/api/inputs")
    def inputs(
        set_id: SetId, status: str = "", reason: str = "", offset: Offset = 0, limit: Limit = 50
    ) -> dict[str, Any]:
        return {"set": set_id, **catalog.get(set_id).input_rows(status, reason, offset, limit).to_json()}

    @api.get("/api/inputs/count")
    def count_inputs(set_id: SetId, status: str = "", reason: str = "") -> dict[str, Any]:
        return {"set": set_id, **catalog.get(set_id).count_inputs(status, reason)}

    @api.get("/api/flags")
    def flags(set_id: SetId) -> dict[str, Any]:
        found = catalog.get(set_id).flags()
        return {"set": set_id, "flags": [SampleSet.flag_json(f) for f in found.values()]}

    @api.post("/api/flags")
    def add_flag(body: FlagRequest) -> dict[str, Any]:
        flag = catalog.get(body.set).flag(body.key, body.reason)
        return {"set": body.set, "flag": SampleSet.flag_json(flag)}

    @api.delete("/api/flags")
    def remove_flag(set_id: SetId, key: str) -> dict[str, Any]:
        return {"set": set_id, "key": key, "removed": catalog.get(set_id).unflag(key)}

    return Guard(api, token=token, allowed_hosts=allowed_hosts, max_body_bytes=max_body_bytes)
