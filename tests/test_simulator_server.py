"""The simulator over real HTTP on loopback: auth, tokens, scoping, pagination, faults, errors."""
import time

import pytest
import requests

from simulator.server import start_server
from simulator.world import World, WorldConfig

UNTIL = "2026-10-05T17:00:00+00:00"
SINCE = "2026-10-04T17:00:00+00:00"


@pytest.fixture(scope="module")
def sim():
    world = World(WorldConfig.demo())
    srv = start_server(world)
    yield world, srv.base_url
    srv.shutdown()


def token(url, creds):
    r = requests.post(f"{url}/sims-primary/oauth2/token", data={
        "grant_type": "client_credentials", "client_id": creds["client_id"], "client_secret": creds["client_secret"]})
    return r


def group(url, creds, tok, name="student", **params):
    params.setdefault("changedUntil", UNTIL)
    return requests.get(f"{url}/sims-primary/api/v1/organisations/{creds['organisation_id']}/datagroups/{name}",
                        params=params, headers={"Authorization": f"Bearer {tok}",
                                                "Ocp-Apim-Subscription-Key": creds["subscription_key"]})


def test_health(sim):
    assert requests.get(f"{sim[1]}/_sim/health").json() == {"status": "ok"}


def test_sims7_basic_auth_per_school(sim):
    world, url = sim
    a = world.credentials("8862001")
    path = f"{url}/sims7/v1/bases/8862001/export"
    ok = requests.get(path, params={"filter": "snapshot", "until": UNTIL}, auth=(a["username"], a["password"]))
    assert ok.status_code == 200 and ok.headers["Content-Type"] == "application/xml" and b"<B2BMessage" in ok.content
    bad = requests.get(path, params={"filter": "snapshot", "until": UNTIL}, auth=(a["username"], "nope"))
    assert bad.status_code == 401 and "Basic" in bad.headers["WWW-Authenticate"]
    b = world.credentials("8862002")
    assert requests.get(path, params={"filter": "snapshot", "until": UNTIL},
                        auth=(b["username"], b["password"])).status_code == 401
    assert requests.get(path, params={"filter": "nonsense", "until": UNTIL},
                        auth=(a["username"], a["password"])).status_code == 400
    assert requests.get(f"{url}/sims7/v1/bases/8869999/export", params={"filter": "snapshot", "until": UNTIL},
                        auth=(a["username"], a["password"])).status_code == 404


def test_primary_token_subscription_key_and_org_scope(sim):
    world, url = sim
    c = world.credentials("8862003")
    r = token(url, c)
    assert r.status_code == 200 and r.json()["token_type"] == "Bearer"
    tok = r.json()["access_token"]
    assert group(url, c, tok).status_code == 200
    assert token(url, dict(c, client_secret="x")).status_code == 401
    bad_key = group(url, dict(c, subscription_key="x"), tok)
    assert bad_key.status_code == 401 and "subscription key" in bad_key.json()["message"]
    other = world.credentials("8862004")
    assert group(url, dict(c, organisation_id=other["organisation_id"]), tok).status_code == 403
    assert group(url, c, "not-a-token").status_code == 401
    assert group(url, c, tok, changedUntil="yesterday").status_code == 400
    assert group(url, c, tok, name="payroll").status_code == 404


def test_token_expires(sim):
    world, url = sim
    c = world.credentials("8862004")
    requests.post(f"{url}/_sim/token-lifetime", json={"seconds": 1})
    try:
        tok = token(url, c).json()["access_token"]
        assert group(url, c, tok).status_code == 200
        time.sleep(1.2)
        r = group(url, c, tok)
        assert r.status_code == 401 and 'invalid_token' in r.headers["WWW-Authenticate"]
    finally:
        requests.post(f"{url}/_sim/token-lifetime", json={"seconds": 3600})


def test_pagination_walks_every_item_once(sim):
    world, url = sim
    c = world.credentials("8862003")
    tok = token(url, c).json()["access_token"]
    whole = group(url, c, tok, pageSize=500).json()
    seen, page = [], group(url, c, tok, pageSize=30).json()
    pages = 1
    while True:
        seen += page["items"]
        if not page["next"]:
            break
        page = requests.get(url + page["next"], headers={"Authorization": f"Bearer {tok}",
                                                         "Ocp-Apim-Subscription-Key": c["subscription_key"]}).json()
        pages += 1
    assert pages == whole["totalItems"] // 30 + (1 if whole["totalItems"] % 30 else 0)
    assert seen == whole["items"] and len(seen) == whole["totalItems"] > 100


def test_f6_whole_group_on_change(sim):
    world, url = sim
    c = world.credentials("8862003")
    tok = token(url, c).json()["access_token"]
    items = group(url, c, tok, name="contacts", changedSince=SINCE).json()["items"]
    assert items
    state = world.state(world_dt(UNTIL))
    for it in items:
        assert it["data"] == state.students["8862003"][it["studentId"]].blocks["contacts"]


def world_dt(s):
    from datetime import datetime

    return datetime.fromisoformat(s)


def test_fault_injection_429_with_retry_after(sim):
    world, url = sim
    c = world.credentials("8862003")
    tok = token(url, c).json()["access_token"]
    requests.post(f"{url}/_sim/faults", json={"path_prefix": "/sims-primary/api", "status": 429, "count": 2,
                                              "retry_after": 1})
    assert [group(url, c, tok).status_code for _ in range(3)] == [429, 429, 200]
    stats = requests.get(f"{url}/_sim/stats").json()
    assert stats["/sims-primary/api 429"] >= 2
