"""The browser's boundaries: the token, the Host and Origin checks, paths kept inside DIR, read-only shards."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from inspector_sets import TOKEN, fingerprint, real_triples

from cafe_core.flags import add_flag, read_flags
from cafe_inspector import create_app
from cafe_inspector.guard import COOKIE, LOOPBACK_HOSTS

REAL_KEYS = [t.key for t in real_triples()]
GUARDED = ["/", "/static/app.js", "/api/sets", "/api/summary?set=real", f"/api/image?set=real&key={REAL_KEYS[0]}"]


# -- token --------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", GUARDED)
def test_every_call_but_health_needs_the_token(token_client: TestClient, url: str) -> None:
    missing = token_client.get(url)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "token" in missing.json()["detail"]
    assert token_client.get(url, headers={"authorization": "Bearer wrong-token-123"}).status_code == 403
    assert token_client.get(url, headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert token_client.get(url, headers={"x-cafe-token": TOKEN}).status_code == 200


def test_health_stays_open(token_client: TestClient) -> None:
    assert token_client.get("/health").json() == {"status": "ok"}


def test_writes_need_the_token_too(token_client: TestClient, served: Path) -> None:
    body = {"set": "real", "key": REAL_KEYS[0], "reason": "bad"}
    assert token_client.post("/api/flags", json=body).status_code == 401
    assert token_client.delete(f"/api/flags?set=real&key={REAL_KEYS[0]}").status_code == 401
    assert not (served / "real" / "flags.parquet").exists()
    assert token_client.post("/api/flags", json=body, headers={"x-cafe-token": TOKEN}).status_code == 200


def test_the_page_trades_the_token_in_its_address_for_a_cookie(token_client: TestClient) -> None:
    response = token_client.get(f"/?token={TOKEN}&set=real", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/?set=real"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    # the client now holds the cookie: the page, its assets and the API answer without a header
    assert token_client.get("/?set=real").status_code == 200
    assert token_client.get("/api/sets").status_code == 200
    assert token_client.get("/?token=wrong-token-123").status_code == 403


def test_a_short_token_is_refused(served: Path) -> None:
    with pytest.raises(ValueError, match="at least 8"):
        create_app(served, token="short")


# -- Host and Origin ----------------------------------------------------------------------------


def test_a_loopback_server_answers_only_loopback_host_names(served: Path) -> None:
    client = TestClient(create_app(served, allowed_hosts=LOOPBACK_HOSTS), base_url="http://127.0.0.1:8765")
    assert client.get("/api/sets").status_code == 200
    assert client.get("/api/sets", headers={"host": "localhost:8765"}).status_code == 200
    rebound = client.get("/api/sets", headers={"host": "evil.example:8765"})
    assert rebound.status_code == 400 and "not served" in rebound.json()["detail"]


def test_writes_from_another_origin_are_refused(client: TestClient, served: Path) -> None:
    body = {"set": "real", "key": REAL_KEYS[0], "reason": "bad"}
    response = client.post("/api/flags", json=body, headers={"origin": "http://evil.example"})
    assert response.status_code == 403 and not (served / "real" / "flags.parquet").exists()
    same = client.post("/api/flags", json=body, headers={"origin": "http://testserver"})
    assert same.status_code == 200


# -- paths stay inside DIR ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("set_id", "status"),
    [
        ("../outside/secret", 400),
        ("..", 400),
        ("real/../../outside/secret", 400),
        ("/etc", 400),
        ("%2Fetc", 400),
        ("~", 400),
        ("real/", 400),
        ("real%00", 400),
        ("real%5C..%5C..", 400),
        ("", 400),
        ("nosuch", 404),
        ("rounds", 404),  # a folder that holds sets but is not one
    ],
)
def test_set_names_cannot_leave_the_folder(client: TestClient, set_id: str, status: int) -> None:
    for url in (
        f"/api/summary?set={set_id}",
        f"/api/samples?set={set_id}",
        f"/api/image?set={set_id}&key={REAL_KEYS[0]}",
    ):
        response = client.get(url)
        assert response.status_code == status, (url, response.text)
        assert "secret" not in response.text or "outside/secret" in set_id


def test_a_symlinked_set_leading_out_is_neither_listed_nor_served(client: TestClient, served: Path) -> None:
    (served / "linked").symlink_to(served.parent / "outside" / "secret", target_is_directory=True)
    assert "linked" not in [s["path"] for s in client.get("/api/sets").json()["sets"]]
    assert client.get("/api/summary?set=linked").status_code == 404
    assert client.get("/api/samples?set=linked").status_code == 404


def test_a_symlinked_set_inside_the_folder_is_fine(client: TestClient, served: Path) -> None:
    (served / "alias").symlink_to(served / "real", target_is_directory=True)
    assert client.get("/api/summary?set=alias").json()["num_samples"] == 10


def test_a_symlinked_shard_leading_out_is_not_read(client: TestClient, served: Path) -> None:
    tar = served / "real" / "shard-000000.tar"
    tar.unlink()
    tar.symlink_to(served.parent / "outside" / "secret" / "shard-000000.tar")
    assert client.get(f"/api/image?set=real&key={REAL_KEYS[0]}").status_code == 404
    assert client.get(f"/api/sample?set=real&key={REAL_KEYS[0]}").status_code == 404
    cards = client.get("/api/samples?set=real&limit=4").json()["items"]
    assert all(card["prompt"] is None and "outside" in card["problem"] for card in cards)


def test_a_symlinked_index_leading_out_is_not_read(client: TestClient, served: Path) -> None:
    index = served / "real" / "shardindex.json"
    index.unlink()
    index.symlink_to(served.parent / "outside" / "secret" / "shardindex.json")
    assert client.get("/api/samples?set=real").status_code == 404


def test_a_symlinked_flags_file_leading_out_is_neither_read_nor_replaced(client: TestClient, served: Path) -> None:
    outside = served.parent / "outside" / "secret"
    add_flag(outside, REAL_KEYS[0], "outside flag")
    before = (outside / "flags.parquet").read_bytes()
    (served / "real" / "flags.parquet").symlink_to(outside / "flags.parquet")
    assert client.get("/api/flags?set=real").status_code == 404
    assert client.post("/api/flags", json={"set": "real", "key": REAL_KEYS[1], "reason": "x"}).status_code == 404
    assert (outside / "flags.parquet").read_bytes() == before
    assert [f.reason for f in read_flags(outside)] == ["outside flag"]


# -- read-only ------------------------------------------------------------------------------------


def test_a_whole_session_leaves_every_shard_file_as_it_was(client: TestClient, served: Path) -> None:
    before = fingerprint(served.parent)
    listed = [s["path"] for s in client.get("/api/sets").json()["sets"]]
    for set_id in listed:
        client.get(f"/api/summary?set={set_id}").raise_for_status()
        client.get(f"/api/stats?set={set_id}").raise_for_status()
        client.get(f"/api/inputs?set={set_id}&limit=50").raise_for_status()
        page = client.get(f"/api/samples?set={set_id}&limit=50&score=box:0:").json()
        for item in page["items"]:
            client.get(f"/api/sample?set={set_id}&key={item['key']}").raise_for_status()
            for kind in ("target", "reference", "mask", "overlay"):
                client.get(f"/api/image?set={set_id}&key={item['key']}&kind={kind}&size=128").raise_for_status()
    client.post("/api/flags", json={"set": "real", "key": REAL_KEYS[0], "reason": "bad"}).raise_for_status()
    client.delete(f"/api/flags?set=real&key={REAL_KEYS[0]}").raise_for_status()
    assert fingerprint(served.parent) == before
    after = {str(p.relative_to(served.parent)) for p in served.parent.rglob("*") if p.is_file()}
    assert after - set(before) == {"served/real/flags.parquet"}  # the one file written
    leftovers = [p.name for p in served.rglob(".*")]
    assert leftovers == [], f"temporary files left: {leftovers}"


def test_shard_files_are_opened_read_only(client: TestClient, served: Path) -> None:
    """Make every shard file read-only (even for the owner): browsing still works."""
    files = [p for p in (served / "real").iterdir() if p.is_file()]
    for path in files:
        path.chmod(0o444)
    try:
        assert client.get("/api/samples?set=real&limit=50").json()["total"] == 10
        assert client.get(f"/api/image?set=real&key={REAL_KEYS[9]}").status_code == 200
    finally:
        for path in files:
            os.chmod(path, 0o644)
