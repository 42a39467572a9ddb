"""The shard browser's JSON API on real tiny sets: listing, paging by the index, filters, inputs, images."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from inspector_sets import REAL_SAMPLES, REPAIRED, real_triples, round1_triples
from PIL import Image

from cafe_core import TripleReader, make_key
from cafe_inspector import create_app
from cafe_inspector.thumbnails import OUTLINE_RGB

REAL_KEYS = [t.key for t in real_triples()]


def get(client: TestClient, url: str, status: int = 200) -> dict:
    response = client.get(url)
    assert response.status_code == status, response.text
    return response.json()


def keys_of(page: dict) -> list[str]:
    return [item["key"] for item in page["items"]]


# -- sets and summaries -------------------------------------------------------------------------


def test_lists_the_sets_below_the_folder(client: TestClient) -> None:
    listed = {s["path"]: s for s in get(client, "/api/sets")["sets"]}
    assert sorted(listed) == ["big", "real", "rounds/round-1"]  # never the `outside` folder beside it
    real = listed["real"]
    assert real["num_samples"] == REAL_SAMPLES and real["num_shards"] == 3
    assert real["closed"] is True and real["num_flagged"] == 0 and real["prefix"] == "shard"


def test_a_served_set_is_named_dot(served: Path) -> None:
    client = TestClient(create_app(served / "real"))
    (listed,) = get(client, "/api/sets")["sets"]
    assert listed["path"] == "."
    assert get(client, "/api/summary?set=.")["num_samples"] == REAL_SAMPLES


def test_summary_counts_rounds_reasons_and_score_names(client: TestClient) -> None:
    summary = get(client, "/api/summary?set=real")
    assert summary["num_samples"] == 10 and summary["num_inputs"] == 13 and summary["index"] == "ok"
    assert summary["status"] == {"ok": 10, "skipped": 2, "failed": 1}
    assert summary["reasons"]["ok"] == {"decode.exif_transposed": 3}
    assert summary["rounds"] == {"0": 10}
    assert summary["score_names"] == ["box", "mask_iou"]
    assert get(client, "/api/summary?set=rounds/round-1")["quality_names"] == ["clip_t"]


# -- paging ------------------------------------------------------------------------------------


def test_pages_walk_the_set_in_reader_order(client: TestClient, served: Path) -> None:
    """Pages of 4 across 3 shards of 4, 4 and 2 samples give the keys in the order a reader reads them."""
    read = [t.key for t in TripleReader(served / "real", on_error="raise")]
    seen, offset = [], 0
    while offset is not None:
        page = get(client, f"/api/samples?set=real&offset={offset}&limit=4")
        assert page["total"] == REAL_SAMPLES
        assert [item["position"] for item in page["items"]] == list(range(offset, offset + len(page["items"])))
        seen += keys_of(page)
        offset = page["next_offset"]
    assert seen == read == REAL_KEYS


def test_a_page_crossing_a_shard_boundary(client: TestClient) -> None:
    page = get(client, "/api/samples?set=real&offset=3&limit=3")
    assert keys_of(page) == REAL_KEYS[3:6]
    assert [item["shard"] for item in page["items"]] == ["shard-000000", "shard-000001", "shard-000001"]


def test_a_card_has_prompt_subject_scores_and_round(client: TestClient) -> None:
    (card,) = get(client, "/api/samples?set=rounds/round-1&limit=1")["items"]
    first = round1_triples()[0]
    assert card["key"] == first.key
    assert card["prompt"] == first.prompt
    assert card["subject"] == "green dog" and card["round"] == 1
    assert card["scores"] == {"box": 0.5, "mask_iou": 0.9}
    assert card["quality"] == {"clip_t": 0.2}
    assert card["flag"] is None


def test_an_offset_past_the_end_gives_an_empty_page(client: TestClient) -> None:
    page = get(client, "/api/samples?set=real&offset=50")
    assert page["items"] == [] and page["next_offset"] is None and page["total"] == REAL_SAMPLES


def test_the_first_page_reads_only_the_first_shard(served: Path) -> None:
    """Paging goes by the index: later shards' stats.json and tars are not touched."""
    for name in ("shard-000001.tar", "shard-000002.tar", "shard-000001.stats.json", "shard-000002.stats.json"):
        path = served / "real" / name
        path.write_bytes(os.urandom(path.stat().st_size))
    client = TestClient(create_app(served))
    page = get(client, "/api/samples?set=real&limit=4")
    assert keys_of(page) == REAL_KEYS[:4] and page["total"] == REAL_SAMPLES
    assert client.get(f"/api/image?set=real&key={REAL_KEYS[0]}&kind=overlay").status_code == 200


def test_nothing_is_read_at_start_up(served: Path) -> None:
    """Every tar replaced by garbage: the app starts and answers /health and the page regardless."""
    for tar in served.rglob("*.tar"):
        tar.write_bytes(b"garbage")
    client = TestClient(create_app(served))
    assert client.get("/health").status_code == 200
    assert client.get("/").status_code == 200
    assert len(client.app.app.state.catalog.thumbnails) == 0


def test_an_open_set_pages_from_its_stats_files(client: TestClient, served: Path) -> None:
    (served / "real" / "shardindex.json").unlink()
    (served / "real" / "dataset.json").unlink()
    assert keys_of(get(client, "/api/samples?set=real&limit=20")) == REAL_KEYS
    assert get(client, "/api/summary?set=real")["index"].startswith("missing")


def test_a_damaged_tar_marks_its_cards_instead_of_failing_the_page(client: TestClient, served: Path) -> None:
    tar = served / "real" / "shard-000000.tar"
    tar.write_bytes(tar.read_bytes()[:3000])  # cut inside the first sample
    page = get(client, "/api/samples?set=real&limit=4")
    assert len(page["items"]) == 4
    assert all("problem" in item and item["prompt"] is None for item in page["items"])
    assert "validate" in page["items"][0]["problem"]
    assert client.get(f"/api/image?set=real&key={REAL_KEYS[0]}&kind=target").status_code == 422


# -- filters -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("round=0", list(range(10))),
        ("round=1", []),
        ("score=box:0.3:0.6", [3, 4, 5, 6]),
        ("score=box::0.15", [0, 1]),
        ("score=box:0.85:", [9]),
        ("score=mask_iou:0.95:", []),
        ("score=box::", list(range(10))),  # both bounds open: has the score at all
        ("score=nosuch:0:1", []),
        ("subject=CUBE", [1, 3, 5, 7, 9]),
        ("subject=%20mug%20", [0, 2, 4, 6, 8]),
        ("reason=decode.exif_transposed", sorted(REPAIRED)),
        ("reason=gate.mask_area", []),  # a skipped input's reason: it has no samples
        ("subject=cube&score=box:0.5:", [5, 7, 9]),
        ("subject=mug&reason=decode.exif_transposed", [4]),
    ],
)
def test_filters(client: TestClient, query: str, expected: list[int]) -> None:
    page = get(client, f"/api/samples?set=real&limit=50&{query}")
    assert keys_of(page) == [REAL_KEYS[i] for i in expected]
    assert page["total"] == len(expected) and page["next_offset"] is None


def test_filters_on_a_generated_round(client: TestClient) -> None:
    keys = [t.key for t in round1_triples()]
    assert keys_of(get(client, "/api/samples?set=rounds/round-1&round=1&round=2")) == keys
    assert keys_of(get(client, "/api/samples?set=rounds/round-1&score=quality.clip_t::0.215")) == keys[:2]
    assert keys_of(get(client, "/api/samples?set=rounds/round-1&subject=dog&score=box:0.75:")) == keys[3:]


def test_filtered_pages(client: TestClient) -> None:
    """A filtered page stops reading once it knows a next page exists; the last page knows the total."""
    seen, offset, totals = [], 0, []
    while offset is not None:
        page = get(client, f"/api/samples?set=real&subject=cube&offset={offset}&limit=2")
        totals.append(page["total"])
        seen += keys_of(page)
        offset = page["next_offset"]
    assert seen == [REAL_KEYS[i] for i in (1, 3, 5, 7, 9)]
    assert totals == [None, None, 5]


@pytest.mark.parametrize(
    ("query", "total"),
    [("", 10), ("subject=cube", 5), ("score=box:0.3:0.6&subject=mug", 2), ("reason=decode.exif_transposed", 3)],
)
def test_counting_a_filter(client: TestClient, query: str, total: int) -> None:
    assert get(client, f"/api/samples/count?set=real&{query}") == {"set": "real", "total": total, "counted": total}


@pytest.mark.parametrize(
    ("query", "total"), [("", 13), ("status=skipped", 2), ("reason=decode.exif_transposed", 3), ("status=failed", 1)]
)
def test_counting_input_rows(client: TestClient, query: str, total: int) -> None:
    assert get(client, f"/api/inputs/count?set=real&{query}")["total"] == total


@pytest.mark.parametrize(
    "query",
    [
        "score=box:a:1",
        "score=box:0.9:0.1",
        "score=box:0.1",
        "score=box:nan:",
        "score=b%20x:0:1",
        "flagged=maybe",
        "limit=0",
        "limit=1000",
        "offset=-1",
        "round=-1",
        "round=one",
    ],
)
def test_bad_filter_arguments_are_refused_with_a_message(client: TestClient, query: str) -> None:
    response = client.get(f"/api/samples?set=real&{query}")
    assert response.status_code == 400, response.text
    assert response.json()["detail"]


# -- one sample ----------------------------------------------------------------------------------


def test_sample_detail(client: TestClient) -> None:
    key = REAL_KEYS[4]
    detail = get(client, f"/api/sample?set=real&key={key}")
    assert detail["key"] == key and detail["shard"] == "shard-000001"
    assert detail["prompt"] == "a photo of blue mug on a noisy table"
    assert detail["metadata"]["subject"] == "blue mug" and detail["metadata"]["round"] == 0
    assert detail["input"]["status"] == "ok" and detail["input"]["reason"] == "decode.exif_transposed"
    assert detail["input"]["sample_keys"] == [key]
    assert set(detail["members"]) == {"target.jpg", "reference.png", "mask.png", "prompt.txt", "json"}


def test_unknown_and_malformed_keys(client: TestClient) -> None:
    unknown = make_key("never-written")
    assert "not in set" in get(client, f"/api/sample?set=real&key={unknown}", 404)["detail"]
    assert get(client, "/api/sample?set=real&key=../../etc/passwd", 400)["detail"].startswith("key:")
    assert client.get(f"/api/image?set=real&key={unknown}").status_code == 404


# -- per-input status rows -----------------------------------------------------------------------


def test_input_rows_with_their_reasons(client: TestClient) -> None:
    page = get(client, "/api/inputs?set=real&limit=50")
    assert page["total"] == 13 and len(page["items"]) == 13
    skipped = get(client, "/api/inputs?set=real&status=skipped")
    assert [(r["input_key"], r["reason"]) for r in skipped["items"]] == [
        ("inputs/broken.jpg", "decode.truncated"),
        ("inputs/small.jpg", "gate.mask_area"),
    ]
    (failed,) = get(client, "/api/inputs?set=real&status=failed")["items"]
    assert failed["reason"] == "error.segment" and "boom" in failed["error"] and failed["shard"] == "shard-000002"
    repaired = get(client, "/api/inputs?set=real&reason=decode.exif_transposed")
    assert repaired["total"] == 3 and all(r["status"] == "ok" for r in repaired["items"])
    assert get(client, "/api/inputs?set=real&status=ok&reason=decode.truncated")["total"] == 0


def test_input_rows_page_across_shards(client: TestClient) -> None:
    every = get(client, "/api/inputs?set=real&limit=50")["items"]
    paged, offset = [], 0
    while offset is not None:
        page = get(client, f"/api/inputs?set=real&offset={offset}&limit=3")
        paged += page["items"]
        offset = page["next_offset"]
    assert paged == every


def test_input_row_arguments_are_checked(client: TestClient) -> None:
    assert "status" in get(client, "/api/inputs?set=real&status=weird", 400)["detail"]
    assert "reason" in get(client, "/api/inputs?set=real&reason=Not%20A%20Code", 400)["detail"]


# -- images --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "fmt", "mode"),
    [("target", "JPEG", "RGB"), ("overlay", "JPEG", "RGB"), ("reference", "PNG", "RGBA"), ("mask", "PNG", "L")],
)
@pytest.mark.parametrize("size", [128, 256, 1024])
def test_thumbnails_are_images_of_bounded_size(client: TestClient, kind: str, fmt: str, mode: str, size: int) -> None:
    page = get(client, "/api/samples?set=big&limit=1")
    key = page["items"][0]["key"]
    response = client.get(f"/api/image?set=big&key={key}&kind={kind}&size={size}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == f"image/{fmt.lower()}"
    assert "max-age" in response.headers["cache-control"]
    with Image.open(io.BytesIO(response.content)) as image:
        image.load()
        assert image.format == fmt and image.mode == mode
        if kind == "reference":  # the cut-out is 320x240 (half the target)
            assert max(image.size) == min(size, 320)
        else:
            assert max(image.size) == min(size, 640)  # never upscaled, never above `size`


def test_the_overlay_draws_the_mask_outline(client: TestClient) -> None:
    key = keys_of(get(client, "/api/samples?set=big&limit=1"))[0]

    def outline_pixels(kind: str) -> int:
        data = client.get(f"/api/image?set=big&key={key}&kind={kind}&size=256").content
        with Image.open(io.BytesIO(data)) as image:
            rgb = image.convert("RGB")
            return sum(
                1
                for pixel in rgb.get_flattened_data()
                if all(abs(a - b) < 60 for a, b in zip(pixel, OUTLINE_RGB, strict=True))
            )

    # The square subject's border at 256 px: 4 sides of ~128 px, about 2 px wide.
    assert outline_pixels("overlay") > 600
    assert outline_pixels("target") < 50


def test_thumbnails_are_cached(client: TestClient) -> None:
    catalog = client.app.app.state.catalog
    key = REAL_KEYS[0]
    first = client.get(f"/api/image?set=real&key={key}&kind=overlay&size=128").content
    hits = catalog.thumbnails.hits
    assert client.get(f"/api/image?set=real&key={key}&kind=overlay&size=128").content == first
    assert catalog.thumbnails.hits == hits + 1


@pytest.mark.parametrize("query", ["kind=raw", "size=300", "size=0", "size=big"])
def test_bad_image_requests(client: TestClient, query: str) -> None:
    assert client.get(f"/api/image?set=real&key={REAL_KEYS[0]}&{query}").status_code == 400


# -- the page ------------------------------------------------------------------------------------


def test_the_page_and_its_assets(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "shard browser" in page.text
    for asset, kind in (("app.js", "javascript"), ("style.css", "css")):
        response = client.get(f"/static/{asset}")
        assert response.status_code == 200 and kind in response.headers["content-type"]


def test_stats_endpoint_is_cafe_shards_stats(client: TestClient, served: Path) -> None:
    from cafe_core.stats import shard_set_stats

    assert get(client, "/api/stats?set=real") == json.loads(json.dumps(shard_set_stats(served / "real")))


def test_a_broken_index_is_reported_not_fatal(client: TestClient, served: Path) -> None:
    (served / "rounds" / "round-1" / "shardindex.json").write_text('{"shardlist": [{"url": "../../etc/passwd"}]}')
    listed = {s["path"]: s for s in get(client, "/api/sets")["sets"]}
    assert "cafe shards index" in listed["rounds/round-1"]["problem"]
    assert listed["real"]["num_samples"] == REAL_SAMPLES  # the other sets still list
    assert "cafe shards index" in get(client, "/api/samples?set=rounds/round-1", 422)["detail"]
