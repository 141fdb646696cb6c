"""The LA warehouse (Postgres) hook, on apache-airflow-providers-postgres.

Connection ``b2b_warehouse`` (any Postgres connection: host, port, login, password,
schema = database name). When that connection is not defined, the hook falls back to
``B2B_DATABASE_URL`` and then to the embedded pgserver database, exactly like the
``b2b`` command line, so the demo and a production deployment run the same code.
"""
from __future__ import annotations

from typing import Any

from airflow.providers.postgres.hooks.postgres import PostgresHook


class WarehouseHook(PostgresHook):
    """psycopg 3 connections to the B2B warehouse, with the project's fallbacks."""

    default_conn_name = "b2b_warehouse"
    hook_name = "B2B warehouse (Postgres)"

    def __init__(self, postgres_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(postgres_conn_id=postgres_conn_id, **kwargs)
        self._fallback_url: str | None = None

    def _defined(self) -> bool:
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            self.get_connection(self.postgres_conn_id)
        except AirflowNotFoundException:
            return False
        return True

    def get_conn(self) -> Any:
        if self._defined():
            return super().get_conn()
        from b2b import db

        if self._fallback_url is None:
            self._fallback_url = db.database_url()
            self.log.info("connection %r not defined; using %s", self.postgres_conn_id, db.redact(self._fallback_url))
        return db.connect(self._fallback_url)
