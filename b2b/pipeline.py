"""The processing chain in order, free of Airflow: one import for every stage function.

An export run goes ``extract → hash_filter → validate → load → match → conflicts → apply``
(→ ``contacts`` for snapshots and changed data) → ``commit`` (the run's hash-cache entries and
watermark count from now on, and the base's lease is released: ``b2b.ops.runs``). The DAG operators, the manual import
(``b2b ingest``), the demo, the benchmarks and the tests all call these same functions.
Every stage works on one run window (``b2b.context.RunContext``) with set-based SQL and
first removes what an earlier attempt of the same stage derived, so any stage can be
retried on its own.
"""
from __future__ import annotations

from b2b.ingest.extract import store_messages
from b2b.ingest.hashfilter import hash_filter
from b2b.ingest.load import load
from b2b.ingest.validation import validate
from b2b.ops.runs import begin_run
from b2b.ops.runs import finish_run as commit
from b2b.reconcile.apply import apply
from b2b.reconcile.conflicts import conflicts
from b2b.reconcile.contacts import sync as contacts
from b2b.reconcile.match_stage import match

#: the stages after extract, in order
STAGES = ("hash_filter", "validate", "load", "match", "conflicts", "apply", "contacts", "commit")

__all__ = ["STAGES", "apply", "begin_run", "commit", "conflicts", "contacts", "hash_filter", "load", "match",
           "store_messages", "validate"]
