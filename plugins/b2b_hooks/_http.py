"""Shared HTTP plumbing for the SIMS hooks, in the manner of the providers' ``HttpHook``.

A hook holds a connection id and reads the Airflow connection lazily (no I/O in
``__init__``). Requests go through one ``requests.Session`` with a timeout, and are
retried with exponential backoff on connection errors, 429 and 5xx, honouring
``Retry-After``. Error messages name the base and the HTTP status, never a credential,
token or response body that could carry personal data.

Bodies are streamed, never read whole before they are checked: a body over the size cap
(``max_message_bytes``; a ``Content-Length`` over it is refused before reading) raises
:class:`SourceLimitError`, and a logical request that has not finished by its deadline
(``message_deadline_s``, retries and back-off included; a server trickling bytes) raises
:class:`SourceDeadlineError`. Absolute URLs (a SIMS Primary ``next`` link) are only
requested on the connection's own origin: credentials are never sent anywhere else.
"""
from __future__ import annotations

import email.utils
import threading
import time
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import BaseHook

from b2b.errors import (
    SourceAuthError,
    SourceDeadlineError,
    SourceError,
    SourceLimitError,
    SourceRequestError,
    SourceUnavailableError,
)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
CHUNK = 64 * 1024


# The hooks' errors are the project's source errors (b2b.errors): the operators map them to
# "fail now" (credentials, a refused request, a broken cap) or "retry" (unavailable) in one place.
SimsError = SourceError


class SimsAuthError(SourceAuthError):
    """The MIS refused the credentials (401/403): fix the Airflow connection, do not retry."""


class SimsRequestError(SourceRequestError):
    """The MIS rejected the request itself (4xx other than auth/throttling)."""


class SimsUnavailableError(SourceUnavailableError):
    """The MIS stayed unavailable (429/5xx/connection errors) after every retry."""


class SimsDeadlineError(SourceDeadlineError):
    """A message did not arrive within ``message_deadline_s`` (a server trickling bytes)."""


class SimsLimitError(SourceLimitError):
    """A message broke a cap (``max_message_bytes``, ``max_pages``): refused, never read whole."""


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, the port defaulted from the scheme, as Python's
    ``urlsplit`` reads it; ("", "", -1) when it cannot. Links from a server are checked by
    :func:`same_origin`, which also asks the HTTP library."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "", "", -1
    scheme = (parts.scheme or "").lower()
    if port is None:
        port = 443 if scheme == "https" else 80
    return scheme, (parts.hostname or "").lower(), port


def _library_origin(url: str) -> tuple[str, str, int]:
    """:func:`origin` as urllib3 (which requests connects with) reads the URL."""
    from urllib3.util import parse_url

    try:
        parts = parse_url(url)
    except Exception:  # (urllib3's LocationParseError and anything else: not a URL it would use)
        return "", "", -1
    scheme = (parts.scheme or "").lower()
    return scheme, (parts.host or "").lower().strip("[]"), parts.port or (443 if scheme == "https" else 80)


def same_origin(url: str, base: str) -> bool:
    """Whether a URL a server gave (a next-page link) is on ``base``'s origin, read the way the
    HTTP library will connect: a URL that two parsers read differently is refused ("http://a\\@b/":
    Python's ``urlsplit`` sees host b, requests connects to a, with the credentials), as is
    one with a backslash, white space, a control character or user information."""
    if any(c == "\\" or c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return False
    ours = origin(base)
    mine, theirs = origin(url), _library_origin(url)
    if mine != theirs or mine != ours:
        return False
    from urllib.parse import urlsplit

    return "@" not in urlsplit(url).netloc


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
                 sleep: Any = time.sleep, message_deadline_s: float | None = None, max_message_bytes: int | None = None,
                 max_pages: int | None = None) -> None:
        from b2b.config.settings import Settings

        super().__init__()
        defaults = Settings()
        self.conn_id = conn_id
        #: seconds one message (SIMS 7 export; SIMS Primary data group, all pages) may take
        self.message_deadline_s = float(defaults.message_deadline_s if message_deadline_s is None
                                        else message_deadline_s)
        #: bytes one body (SIMS 7 export; one SIMS Primary page) may have (0 = no cap)
        self.max_message_bytes = int(defaults.max_message_bytes if max_message_bytes is None
                                     else max_message_bytes)
        #: SIMS Primary pages followed per data group
        self.max_pages = int(defaults.max_pages if max_pages is None else max_pages)
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_wait = max_wait
        self._sleep = sleep
        self._conn: Any = None
        self._session: Any = None
        self.requests_made = 0
        self.retries = 0

    # ------------------------------------------------------------ connection
    @property
    def connection(self) -> Any:
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

    def get_conn(self) -> Any:
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

    def deadline(self) -> float:
        """A monotonic deadline ``message_deadline_s`` from now (0 or less = none)."""
        return time.monotonic() + self.message_deadline_s if self.message_deadline_s > 0 else 0.0

    def _check_url(self, url: str) -> None:
        """Refuse an absolute URL outside the connection's own origin (nothing is sent)."""
        if not same_origin(url, self.base_url):
            host = _library_origin(url)[1] or "?"
            raise SimsRequestError(f"{self._what()}: refused to follow a link to another host ({host}); "
                                   "credentials are only sent to the connection's own host")

    def request(self, method: str, path: str, *, label: str | None = None, deadline: float | None = None,
                **kwargs: Any) -> Any:
        """One logical request, retried on 429/5xx/connection errors; returns the response with
        its body read (streamed, under the size cap and the deadline).

        Non-retryable error statuses are returned to the caller, who turns them into
        domain errors (it knows what 401 means for its protocol). ``label`` names the request
        in errors instead of its path (a path can carry an identifier such as an Organisation
        ID); ``deadline`` is a ``time.monotonic()`` instant (default: ``message_deadline_s``
        from now).
        """
        import requests

        session = self.get_conn()
        if path.startswith(("http://", "https://", "//")):
            url = path if not path.startswith("//") else f"{origin(self.base_url)[0]}:{path}"
            self._check_url(url)
        else:
            url = f"{self.base_url}{path}"
        label = label or f"{method} {path.split('?')[0]}"
        deadline = self.deadline() if deadline is None else deadline
        connect_timeout, read_timeout = kwargs.pop("timeout", self.timeout)
        attempt = 0
        while True:
            attempt += 1
            self.requests_made += 1
            left = self._left(deadline, label)
            try:
                resp = self._send(session, method, url, left, label, stream=True, allow_redirects=False,
                                  timeout=(min(connect_timeout, left), min(read_timeout, left)), **kwargs)
                if resp.status_code not in RETRY_STATUSES:
                    self._read_body(resp, deadline, label)
                    return resp
                resp.close()
            except requests.exceptions.InvalidHeader:
                # (requests' own text quotes the header's value: a credential)
                raise SimsRequestError(f"{self._what()}: {label}: a setting sent as a header holds characters a "
                                       "header cannot carry (a line break?); check the connection") from None
            except (requests.ConnectionError, requests.Timeout) as exc:
                self._left(deadline, label)  # a timeout at the deadline is a deadline error
                reason = f"{type(exc).__name__}"
                resp = None
            else:
                reason = f"HTTP {resp.status_code}"
            if attempt > self.max_retries:
                raise SimsUnavailableError(f"{self._what()}: {label} failed after {attempt} attempts ({reason})")
            wait = parse_retry_after(resp.headers.get("Retry-After")) if resp is not None else None
            if wait is None:
                wait = self.backoff * (2 ** (attempt - 1))
            wait = min(wait, self.max_wait)
            if deadline and time.monotonic() + wait > deadline:
                raise SimsDeadlineError(f"{self._what()}: {label} did not succeed within the message deadline "
                                        f"of {self.message_deadline_s:g} s ({reason}; B2B_MESSAGE_DEADLINE_S)")
            self.retries += 1
            self.log.warning("%s: %s, retry %d/%d in %.1fs", self._what(), reason, attempt, self.max_retries, wait)
            self._sleep(wait)

    def _send(self, session: Any, method: str, url: str, left: float, label: str, **kwargs: Any) -> Any:
        """``session.request`` up to the response headers, within ``left`` seconds.

        A per-read timeout cannot stop a server that trickles its status line and headers a
        byte at a time, so with a deadline the call runs in a daemon thread that is abandoned
        (with its session) when the deadline passes."""
        if left == float("inf"):
            return session.request(method, url, **kwargs)
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["resp"] = session.request(method, url, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller's thread
                box["exc"] = exc

        worker = threading.Thread(target=call, name=f"{self.conn_id}-request", daemon=True)
        worker.start()
        worker.join(left)
        if worker.is_alive():
            self._session = None  # never reuse a session a stuck thread still holds
            raise SimsDeadlineError(f"{self._what()}: {label} did not arrive within the message deadline of "
                                    f"{self.message_deadline_s:g} s (B2B_MESSAGE_DEADLINE_S)")
        if "exc" in box:
            raise box["exc"]
        return box["resp"]

    def _left(self, deadline: float, label: str) -> float:
        """Seconds left before ``deadline`` (inf when none); raises once it has passed."""
        if not deadline:
            return float("inf")
        left = deadline - time.monotonic()
        if left <= 0:
            raise SimsDeadlineError(f"{self._what()}: {label} did not arrive within the message deadline of "
                                    f"{self.message_deadline_s:g} s (B2B_MESSAGE_DEADLINE_S)")
        return left

    def _read_body(self, resp: Any, deadline: float, label: str) -> None:
        """Read a streamed body chunk by chunk, stopping at the size cap or the deadline."""
        import requests
        from urllib3.exceptions import HTTPError as Urllib3Error

        cap = self.max_message_bytes
        too_big = f"{self._what()}: {label} is larger than the message size cap of {cap:,} bytes " \
                  "(B2B_MAX_MESSAGE_BYTES); refused"
        try:
            declared = int(resp.headers.get("Content-Length") or -1)
        except ValueError:
            declared = -1
        if cap and declared > cap:
            resp.close()
            raise SimsLimitError(too_big)
        chunks: list[bytes] = []
        total = 0
        raw = resp.raw
        sock = getattr(getattr(raw, "_connection", None), "sock", None)
        try:
            while True:
                left = self._left(deadline, label)
                if sock is not None and left != float("inf"):
                    # each read waits at most until the deadline (a trickle cannot outlast it)
                    sock.settimeout(max(0.01, min(self.timeout[1], left)))
                chunk = raw.read1(CHUNK, decode_content=True)
                if not chunk:
                    break
                total += len(chunk)
                if cap and total > cap:
                    raise SimsLimitError(too_big)
                chunks.append(chunk)
        except (Urllib3Error, OSError, requests.RequestException) as exc:
            resp.close()
            self._left(deadline, label)
            raise SimsUnavailableError(f"{self._what()}: {label}: the body could not be read "
                                       f"({type(exc).__name__})") from None
        except SourceError:
            resp.close()
            raise
        resp._content = b"".join(chunks)
        resp._content_consumed = True

    def _error_text(self, resp: Any) -> str:
        """A short error string from a JSON error body (never the raw body), without the
        connection's own settings (a server's "unknown organisation <id>" put the Organisation ID
        in the task log: a fault sweep)."""
        try:
            body = resp.json()
        except (ValueError, RecursionError):
            return ""
        if not isinstance(body, dict):
            return ""
        msg = str(body.get("error") or body.get("message") or "")[:200]
        for value in self._own_values():
            msg = msg.replace(value, "…")
        return msg

    def _own_values(self) -> list[str]:
        """The connection's settings an error text must not repeat: its password and the extras
        that are secrets or identify the client (a key, a secret, a token, an organisation)."""
        try:
            c = self.connection
            values = [c.password, *(v for k, v in (self.extra or {}).items() if isinstance(v, str) and any(
                w in k.lower() for w in ("key", "secret", "token", "password", "organisation", "organization")))]
        except Exception:  # (no connection: nothing of it to hide)
            return []
        return sorted({v.strip() for v in values if isinstance(v, str) and len(v.strip()) >= 3}, key=len, reverse=True)
