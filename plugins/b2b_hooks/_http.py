"""Shared HTTP plumbing for the SIMS hooks, in the manner of the providers' ``HttpHook``.

A hook holds a connection id and reads the Airflow connection lazily (no I/O in
``__init__``). Requests go through one ``requests.Session`` with a timeout, and are
retried with exponential backoff on connection errors, 429 and 5xx, honouring
``Retry-After``. Error messages name the base and the HTTP status, never a credential,
token or response body that could carry personal data.
"""
from __future__ import annotations

import email.utils
import time
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import BaseHook

from b2b.errors import SourceAuthError, SourceError, SourceRequestError, SourceUnavailableError

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


# The hooks' errors are the project's source errors (b2b.errors): the operators map them to
# "fail now" (credentials, a refused request, a broken cap) or "retry" (unavailable) in one place.
SimsError = SourceError


class SimsAuthError(SourceAuthError):
    """The MIS refused the credentials (401/403): fix the Airflow connection, do not retry."""


class SimsRequestError(SourceRequestError):
    """The MIS rejected the request itself (4xx other than auth/throttling)."""


class SimsUnavailableError(SourceUnavailableError):
    """The MIS stayed unavailable (429/5xx/connection errors) after every retry."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now_dt = datetime.fromtimestamp(now if now is not None else time.time(), tz=UTC)
    return max(0.0, (when - now_dt).total_seconds())


class SimsHttpHook(BaseHook):
    """Common base: connection attributes, a session, retries with backoff."""

    conn_type = "http"
    #: seconds; per request (connect, read)
    timeout: tuple[float, float] = (10.0, 300.0)

    def __init__(self, conn_id: str, *, max_retries: int = 5, backoff: float = 1.0, max_wait: float = 60.0,
                 sleep=time.sleep) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_wait = max_wait
        self._sleep = sleep
        self._conn = None
        self._session = None
        self.requests_made = 0
        self.retries = 0

    # ------------------------------------------------------------ connection
    @property
    def connection(self):
        if self._conn is None:
            self._conn = self.get_connection(self.conn_id)
        return self._conn

    @property
    def extra(self) -> dict[str, Any]:
        return self.connection.extra_dejson or {}

    @property
    def base_url(self) -> str:
        c = self.connection
        host = (c.host or "").rstrip("/")
        if not host:
            raise SimsRequestError(f"connection {self.conn_id!r} has no host")
        if "://" in host:
            return host if not c.port else f"{host}:{c.port}"
        scheme = c.schema or "https"
        return f"{scheme}://{host}:{c.port}" if c.port else f"{scheme}://{host}"

    def get_conn(self):
        """The ``requests.Session`` (created on first use)."""
        if self._session is None:
            import requests

            self._session = requests.Session()
            self._session.headers["User-Agent"] = "b2b-student-pipeline"
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    # ------------------------------------------------------------ requests
    def _what(self) -> str:
        return f"connection {self.conn_id!r}"

    def request(self, method: str, path: str, **kwargs):
        """One logical request, retried on 429/5xx/connection errors; returns the response.

        Non-retryable error statuses are returned to the caller, who turns them into
        domain errors (it knows what 401 means for its protocol).
        """
        import requests

        session = self.get_conn()
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        kwargs.setdefault("timeout", self.timeout)
        attempt = 0
        while True:
            attempt += 1
            self.requests_made += 1
            try:
                resp = session.request(method, url, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                reason = f"{type(exc).__name__}"
                resp = None
            else:
                if resp.status_code not in RETRY_STATUSES:
                    return resp
                reason = f"HTTP {resp.status_code}"
            if attempt > self.max_retries:
                raise SimsUnavailableError(
                    f"{self._what()}: {method} {path.split('?')[0]} failed after {attempt} attempts ({reason})")
            wait = parse_retry_after(resp.headers.get("Retry-After")) if resp is not None else None
            if wait is None:
                wait = self.backoff * (2 ** (attempt - 1))
            wait = min(wait, self.max_wait)
            self.retries += 1
            self.log.warning("%s: %s, retry %d/%d in %.1fs", self._what(), reason, attempt, self.max_retries, wait)
            self._sleep(wait)

    @staticmethod
    def _error_text(resp) -> str:
        """A short error string from a JSON error body (never the raw body)."""
        try:
            body = resp.json()
        except ValueError:
            return ""
        if isinstance(body, dict):
            msg = body.get("error") or body.get("message") or ""
            return str(msg)[:200]
        return ""
