"""Both SIMS hooks against the running simulator: auth, tokens, retries, pagination, errors."""
import json
from datetime import UTC, datetime, timezone

import pytest
import requests

from b2b_hooks._http import SimsAuthError, SimsRequestError, SimsUnavailableError, parse_retry_after
from b2b_hooks.sims7 import Sims7Hook
from b2b_hooks.sims_primary import SimsPrimaryHook
from simulator.server import start_server
from simulator.world import World, WorldConfig

UNTIL = datetime(2026, 10, 5, 17, tzinfo=UTC)
SINCE = datetime(2026, 10, 2, 17, tzinfo=UTC)


@pytest.fixture(scope="module")
def sim():
    world = World(WorldConfig.demo())
    srv = start_server(world)
    yield world, srv
    srv.shutdown()


@pytest.fixture
def conns(sim, monkeypatch):
    """Every demo base's connection as AIRFLOW_CONN_* variables; returns a setter for odd ones."""
    world, srv = sim
    for cid, c in world.airflow_connections(srv.base_url).items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{cid.upper()}", json.dumps(c))

    def put(cid, **c):
        monkeypatch.setenv(f"AIRFLOW_CONN_{cid.upper()}", json.dumps(c))

    yield put
    requests.post(f"{srv.base_url}/_sim/token-lifetime", json={"seconds": world.config.token_lifetime})


def on_roll(world, dfe):
    return sum(1 for s in world.state(UNTIL).students[dfe].values() if s.blocks["student"]["end_date"] is None)


def fault(srv, prefix, status, count, retry_after=None):
    requests.post(f"{srv.base_url}/_sim/faults", json={"path_prefix": prefix, "status": status, "count": count,
                                                      "retry_after": retry_after}).raise_for_status()


def no_sleep():
    waits = []
    return waits, waits.append


def test_init_does_no_io():
    # an undefined connection only fails when used, never at construction (parse-time safety)
    hook = SimsPrimaryHook(sims_primary_conn_id="does_not_exist")
    with pytest.raises(Exception, match="does_not_exist"):
        hook.settings()


def test_sims7_export_is_the_schools_xml(sim, conns):
    world, _ = sim
    msg = Sims7Hook(sims7_conn_id="sims7_8862001").export("8862001", filter="snapshot", until=UNTIL)
    assert msg.content_type == "application/xml"
    assert msg.content.startswith(b"<?xml") and b"<Estab>2001</Estab>" in msg.content
    assert msg.content.count(b"<Pupil>") == on_roll(world, "8862001")


def test_sims7_wrong_credentials_is_a_clear_error_without_the_password(sim, conns):
    world, srv = sim
    c = world.airflow_connections(srv.base_url)["sims7_8862001"]
    conns("sims7_bad", **dict(c, password="not-the-password-xyz"))
    with pytest.raises(SimsAuthError) as err:
        Sims7Hook(sims7_conn_id="sims7_bad").export("8862001", filter="snapshot", until=UNTIL)
    assert "8862001" in str(err.value) and "sims7_bad" in str(err.value)
    assert "not-the-password-xyz" not in str(err.value)
    # another school's credentials do not open this school (F12)
    other = world.airflow_connections(srv.base_url)["sims7_8862002"]
    conns("sims7_other", **dict(other, extra={}))
    with pytest.raises(SimsAuthError):
        Sims7Hook(sims7_conn_id="sims7_other").export("8862001", filter="snapshot", until=UNTIL)
    # a connection labelled for another base is refused before any request
    with pytest.raises(SimsRequestError, match="is for base 8862002"):
        Sims7Hook(sims7_conn_id="sims7_8862002").export("8862001", filter="snapshot", until=UNTIL)


def test_sims7_bad_parameters_are_request_errors(sim, conns):
    with pytest.raises(SimsRequestError, match="HTTP 400"):
        Sims7Hook(sims7_conn_id="sims7_8862001").export("8862001", filter="changed_data", until=UNTIL)


def test_sims7_retries_503_then_succeeds(sim, conns):
    _, srv = sim
    waits, sleep = no_sleep()
    hook = Sims7Hook(sims7_conn_id="sims7_8862002", sleep=sleep, backoff=0.5)
    fault(srv, "/sims7/v1/bases/8862002", 503, 2)
    msg = hook.export("8862002", filter="snapshot", until=UNTIL)
    assert b"<Pupil>" in msg.content
    assert waits == [0.5, 1.0] and hook.requests_made == 3  # exponential backoff without Retry-After


def test_primary_pages_cover_every_item_once(sim, conns):
    world, _ = sim
    hook = SimsPrimaryHook(sims_primary_conn_id="sims_primary_8862003", page_size=37)
    pages = list(hook.iter_pages("student", until=UNTIL))
    ids = [i["studentId"] for p in pages for i in json.loads(p.content)["items"]]
    assert len(pages) == pages[0].total_pages > 1
    assert [p.page for p in pages] == list(range(1, len(pages) + 1))
    assert len(ids) == len(set(ids)) == pages[0].total_items == on_roll(world, "8862003")
    assert hook.tokens_fetched == 1  # one cached token for every page


def test_primary_changed_since_returns_a_delta(sim, conns):
    hook = SimsPrimaryHook(sims_primary_conn_id="sims_primary_8862003")
    full = sum(p.total_items for p in hook.iter_pages("student", until=UNTIL))
    delta = sum(p.total_items for p in hook.iter_pages("student", until=UNTIL, since=SINCE))
    assert 0 < delta < full


def test_primary_429_then_success_honours_retry_after(sim, conns):
    _, srv = sim
    waits, sleep = no_sleep()
    hook = SimsPrimaryHook(sims_primary_conn_id="sims_primary_8862004", sleep=sleep)
    hook.get_token()
    fault(srv, "/sims-primary/api", 429, 2, retry_after=3)
    page = next(hook.iter_pages("sen", until=UNTIL))
    assert page.total_items > 0
    assert waits == [3.0, 3.0] and hook.retries == 2


def test_primary_gives_up_after_max_retries(sim, conns):
    _, srv = sim
    waits, sleep = no_sleep()
    hook = SimsPrimaryHook(sims_primary_conn_id="sims_primary_8862004", sleep=sleep, max_retries=2)
    hook.get_token()
    fault(srv, "/sims-primary/api", 503, 3)
    with pytest.raises(SimsUnavailableError, match="after 3 attempts"):
        next(hook.iter_pages("student", until=UNTIL))
    assert len(waits) == 2


def test_primary_token_expiry_is_refreshed(sim, conns):
    import time

    _, srv = sim
    requests.post(f"{srv.base_url}/_sim/token-lifetime", json={"seconds": 1}).raise_for_status()
    hook = SimsPrimaryHook(sims_primary_conn_id="sims_primary_8862003")
    next(hook.iter_pages("student", until=UNTIL))
    time.sleep(1.2)
    next(hook.iter_pages("student", until=UNTIL))  # cached token expired: a new one is fetched
    assert hook.tokens_fetched == 2


def test_primary_token_rejected_by_server_is_refreshed_once(sim, conns):
    hook = SimsPrimaryHook(sims_primary_conn_id="sims_primary_8862003")
    hook.get_token()
    hook._token = "revoked-token"  # server-side revocation: the cache still believes it valid
    next(hook.iter_pages("student", until=UNTIL))
    assert hook.tokens_fetched == 2


def test_primary_wrong_secret_is_a_clear_error(sim, conns):
    world, srv = sim
    c = world.airflow_connections(srv.base_url)["sims_primary_8862003"]
    conns("sp_bad", **dict(c, password="wrong-secret-123"))
    with pytest.raises(SimsAuthError, match="Client ID/Secret") as err:
        next(SimsPrimaryHook(sims_primary_conn_id="sp_bad").iter_pages("student", until=UNTIL))
    assert "wrong-secret-123" not in str(err.value)


def test_primary_wrong_subscription_key_and_other_org(sim, conns):
    world, srv = sim
    c = world.airflow_connections(srv.base_url)["sims_primary_8862003"]
    conns("sp_key", **dict(c, extra=dict(c["extra"], subscription_key="nope")))
    with pytest.raises(SimsAuthError, match="Subscription Key"):
        next(SimsPrimaryHook(sims_primary_conn_id="sp_key").iter_pages("student", until=UNTIL))
    other = world.airflow_connections(srv.base_url)["sims_primary_8862004"]["extra"]["organisation_id"]
    conns("sp_org", **dict(c, extra=dict(c["extra"], organisation_id=other)))
    with pytest.raises(SimsAuthError, match="Organisation ID"):
        next(SimsPrimaryHook(sims_primary_conn_id="sp_org").iter_pages("student", until=UNTIL))


def test_primary_requires_all_four_settings(sim, conns):
    world, srv = sim
    c = world.airflow_connections(srv.base_url)["sims_primary_8862003"]
    conns("sp_three", **dict(c, extra={"organisation_id": c["extra"]["organisation_id"]}))
    with pytest.raises(SimsAuthError, match="Subscription Key.*all four"):
        next(SimsPrimaryHook(sims_primary_conn_id="sp_three").iter_pages("student", until=UNTIL))


def test_unreachable_host_is_unavailable_not_a_hang(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SIMS7_GONE", json.dumps(
        {"conn_type": "http", "host": "127.0.0.1", "port": 9, "schema": "http", "login": "u", "password": "p"}))
    hook = Sims7Hook(sims7_conn_id="sims7_gone", max_retries=1, sleep=lambda s: None)
    with pytest.raises(SimsUnavailableError, match="ConnectionError"):
        hook.export("8862001", filter="snapshot", until=UNTIL)


def test_parse_retry_after_forms():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


def _return_message(dfe, guid, sent, **fields):
    from lxml import etree

    root = etree.Element("B2BReturn", version="1.0")
    h = etree.SubElement(root, "Header")
    for k, v in (("MessageID", "m-1"), ("LA", "886"), ("DestSchool", dfe), ("Task", "return_to_school"),
                 ("Sent", sent.isoformat())):
        etree.SubElement(h, k).text = v
    p = etree.SubElement(etree.SubElement(root, "Pupils"), "Pupil")
    etree.SubElement(p, "ApplicationReference").text = guid
    for k, v in fields.items():
        etree.SubElement(p, k).text = v
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def test_sims7_import_applies_corrections_from_the_next_event_time(sim, conns):
    world, _ = sim
    dfe = "8862002"
    sent = datetime(2026, 10, 6, 6, tzinfo=UTC)
    guid = sorted(world.state(sent).students[dfe])[3]
    before = world.state(sent).students[dfe][guid].blocks["student"]["surname"]
    answer = Sims7Hook(f"sims7_{dfe}").import_return(
        dfe, _return_message(dfe, guid, sent, Surname="Corrected"))
    assert answer["applied"] == 1 and answer["refused"] == [] and answer["effective"].startswith("2026-10-06T12:00")
    assert world.state(sent).students[dfe][guid].blocks["student"]["surname"] == before  # not yet
    after = world.state(datetime(2026, 10, 6, 13, tzinfo=UTC)).students[dfe][guid]
    assert after.blocks["student"]["surname"] == "Corrected"
    # the next changed-data export carries it
    changed = world.pupils(dfe, "changed_data", datetime(2026, 10, 6, 17, tzinfo=UTC),
                           datetime(2026, 10, 5, 17, tzinfo=UTC))
    assert dict(changed)[guid]["student"]["surname"] == "Corrected"
    # an unknown student is refused with its reason, the others applied
    answer = Sims7Hook(f"sims7_{dfe}").import_return(dfe, _return_message(dfe, "no-such-guid", sent, Surname="X"))
    assert answer["applied"] == 0 and answer["refused"] == [{"guid": "no-such-guid", "reason": "unknown student"}]


def test_sims7_import_refuses_bad_messages_clearly(sim, conns):
    dfe = "8862002"
    hook = Sims7Hook(f"sims7_{dfe}")
    sent = datetime(2026, 10, 6, 6, tzinfo=UTC)
    with pytest.raises(SimsRequestError, match="b2b_return.xsd"):
        hook.import_return(dfe, _return_message(dfe, "g", sent, Gender="X"))
    with pytest.raises(SimsRequestError, match="not well-formed"):
        hook.import_return(dfe, b"<B2BReturn><Header>")
    with pytest.raises(SimsRequestError, match="DTD|document type"):
        hook.import_return(dfe, b'<?xml version="1.0"?><!DOCTYPE B2BReturn [<!ENTITY x "y">]><B2BReturn/>')
    with pytest.raises(SimsRequestError, match="for school 8862001, not 8862002"):
        hook.import_return(dfe, _return_message("8862001", "g", sent, Surname="X"))
