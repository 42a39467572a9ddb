"""Flagging through the browser's API: the parquet beside the set, and stats that honour it."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from fastapi.testclient import TestClient
from inspector_sets import real_triples
from typer.testing import CliRunner

from cafe_cli.main import app as cafe_app
from cafe_core import flagged_keys, make_key
from cafe_core.flags import add_flag
from cafe_core.stats import shard_set_stats

REAL_KEYS = [t.key for t in real_triples()]


def flag(client: TestClient, key: str, reason: str = "mask misses the subject", set_id: str = "real"):
    return client.post("/api/flags", json={"set": set_id, "key": key, "reason": reason})


def test_flagging_writes_the_parquet_and_stats_honour_it(client: TestClient, served: Path) -> None:
    root = served / "real"
    response = flag(client, REAL_KEYS[3])
    assert response.status_code == 200, response.text
    assert response.json()["flag"]["key"] == REAL_KEYS[3]
    table = pq.read_table(root / "flags.parquet")
    assert table.column("key").to_pylist() == [REAL_KEYS[3]]
    assert table.column("reason").to_pylist() == ["mask misses the subject"]
    assert flagged_keys(root) == {REAL_KEYS[3]}
    stats = shard_set_stats(root)
    assert stats["num_samples"] == 10 and stats["num_flagged"] == 1 and stats["num_usable"] == 9
    assert stats["rounds"] == {"0": 9}
    assert stats["scores"]["box"]["count"] == 9
    assert 0.3 not in [stats["scores"]["box"]["min"], stats["scores"]["box"]["max"]]
    assert client.get("/api/stats?set=real").json()["num_flagged"] == 1
    assert client.get("/api/summary?set=real").json()["num_flagged"] == 1


def test_flags_show_on_cards_and_filter_pages(client: TestClient) -> None:
    flag(client, REAL_KEYS[2], "duplicate")
    flag(client, REAL_KEYS[7], "wrong subject")
    cards = {c["key"]: c for c in client.get("/api/samples?set=real&limit=50").json()["items"]}
    assert cards[REAL_KEYS[2]]["flag"]["reason"] == "duplicate"
    assert cards[REAL_KEYS[0]]["flag"] is None
    only = client.get("/api/samples?set=real&flagged=only").json()
    assert [c["key"] for c in only["items"]] == [REAL_KEYS[2], REAL_KEYS[7]]
    usable = client.get("/api/samples?set=real&flagged=exclude&limit=50").json()
    assert usable["total"] == 8 and REAL_KEYS[2] not in [c["key"] for c in usable["items"]]
    listed = client.get("/api/flags?set=real").json()["flags"]
    assert [(f["key"], f["reason"]) for f in listed] == [(REAL_KEYS[2], "duplicate"), (REAL_KEYS[7], "wrong subject")]
    assert client.get(f"/api/sample?set=real&key={REAL_KEYS[7]}").json()["flag"]["reason"] == "wrong subject"


def test_reflagging_replaces_and_unflagging_removes(client: TestClient, served: Path) -> None:
    flag(client, REAL_KEYS[1], "first")
    flag(client, REAL_KEYS[1], "second thoughts")
    assert [f["reason"] for f in client.get("/api/flags?set=real").json()["flags"]] == ["second thoughts"]
    removed = client.delete(f"/api/flags?set=real&key={REAL_KEYS[1]}")
    assert removed.status_code == 200 and removed.json()["removed"] is True
    assert client.delete(f"/api/flags?set=real&key={REAL_KEYS[1]}").json()["removed"] is False
    assert flagged_keys(served / "real") == set()
    assert shard_set_stats(served / "real")["num_usable"] == 10


def test_flags_written_elsewhere_are_seen(client: TestClient, served: Path) -> None:
    """Another process (a script, a second browser) flags: the next request sees it."""
    assert client.get("/api/summary?set=real").json()["num_flagged"] == 0
    add_flag(served / "real", REAL_KEYS[5], "from a script")
    assert client.get("/api/summary?set=real").json()["num_flagged"] == 1


def test_bad_flag_requests(client: TestClient, served: Path) -> None:
    assert flag(client, make_key("not in the set")).status_code == 404
    assert flag(client, "zz").status_code == 400
    assert "say why" in flag(client, REAL_KEYS[0], reason="  ").json()["detail"]
    assert flag(client, REAL_KEYS[0], reason="x" * 501).status_code == 400
    extra = client.post("/api/flags", json={"set": "real", "key": REAL_KEYS[0], "reason": "r", "admin": True})
    assert extra.status_code == 400
    assert client.post("/api/flags", json={"set": "real", "key": REAL_KEYS[0]}).status_code == 400
    # a form post (text/plain, as a page elsewhere could send without asking) is not a flag
    body = json.dumps({"set": "real", "key": REAL_KEYS[0], "reason": "csrf"})
    assert client.post("/api/flags", content=body, headers={"content-type": "text/plain"}).status_code == 400
    assert not (served / "real" / "flags.parquet").exists()


def test_an_unwritable_flags_file_says_so(client: TestClient, served: Path) -> None:
    # A folder in the flags file's place cannot be replaced, root or not (chmod would not stop root).
    (served / "real" / "flags.parquet").mkdir()
    response = flag(client, REAL_KEYS[0])
    assert response.status_code == 409 and "write access" in response.json()["detail"]
    assert [p.name for p in (served / "real").glob(".*")] == []  # the temporary was removed


def test_cafe_shards_stats_honours_flags(client: TestClient, served: Path) -> None:
    flag(client, REAL_KEYS[0])
    result = CliRunner().invoke(cafe_app, ["shards", "stats", str(served / "real"), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["num_flagged"] == 1 and stats["num_usable"] == 9 and stats["rounds"] == {"0": 9}
    table = CliRunner().invoke(cafe_app, ["shards", "stats", str(served / "real")])
    assert table.exit_code == 0 and "flagged" in table.output
