"""The Airflow assets the pipeline produces: what each stage writes, for the Assets page and for
data-aware scheduling (a DAG scheduled on an asset runs when a stage updates it).

Per school (base): what it sent (``raw``), its typed staging rows, its returns. LA-wide: the
anomaly list, the match lists, the conflicts, the LA's current child view and its contacts.
Other DAGs (maintenance, reports) import these objects and schedule on them.
"""
from __future__ import annotations

from airflow.sdk import Asset

GROUP = "b2b"


def _asset(name: str, path: str) -> Asset:
    return Asset(name=name, uri=f"b2b://{path}", group=GROUP)


def received(dfe: str) -> Asset:
    """One school's stored messages and parsed blocks (``raw.inbound_file`` / ``raw.inbound_block``)."""
    return _asset(f"b2b_received_{dfe}", f"raw/inbound/{dfe}")


def staging(dfe: str) -> Asset:
    """One school's typed staging rows (``staging.*``): the school's latest data."""
    return _asset(f"b2b_staging_{dfe}", f"staging/{dfe}")


def returned(dfe: str) -> Asset:
    """What the LA returned to one school (``raw.outbound_file``, ``results.returned_field``)."""
    return _asset(f"b2b_returned_{dfe}", f"outbound/{dfe}")


#: the anomaly list (``results.anomaly``): validation failures of every school
ANOMALIES = _asset("b2b_anomalies", "results/anomaly")
#: the match lists (``results.match``: matched, possible, unmatched) and ``core.child_link``
MATCHES = _asset("b2b_matches", "results/match")
#: the LA's open conflicts (``results.conflict``), worked by officers, cleared by maintenance
CONFLICTS = _asset("b2b_conflicts", "results/conflict")
#: the LA's current view of each child (``core.child_current``)
CHILD_CURRENT = _asset("b2b_child_current", "core/child_current")
#: contacts as accounts (``core.contact``, ``results.rejected_contact``)
CONTACTS = _asset("b2b_contacts", "core/contact")


def stage_outlets(stage: str, dfe: str) -> list[Asset]:
    """The assets a stage of one school's export run updates (what the stage's SQL writes)."""
    return {
        "extract": [received(dfe)],
        "validate": [ANOMALIES],
        "load": [staging(dfe)],
        "match": [MATCHES],
        "conflicts": [CONFLICTS],
        "apply": [CHILD_CURRENT],
        "contacts": [CONTACTS],
        "return_to_school": [returned(dfe)],
    }.get(stage, [])
