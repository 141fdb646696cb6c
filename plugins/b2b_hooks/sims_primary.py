"""SimsPrimaryHook: read SIMS Primary data groups for one school (F1, F6).

Connection (type ``http``), one per school. All four SIMS Primary settings are
required (F1):

=========================  ==================================================
host / port / schema       the SIMS Primary API (or a URL in host)
login                      Client ID
password                   Secret
extra.subscription_key     Subscription Key (``Ocp-Apim-Subscription-Key``)
extra.organisation_id      Organisation ID
=========================  ==================================================

OAuth2 client-credentials tokens are cached until shortly before they expire
and refreshed once if the API reports ``invalid_token``. Pages are followed
until ``next`` is null, only on the connection's own origin (a link to another host is
refused before anything is sent) and up to ``max_pages``; they must run 1..totalPages in
order (a page missing, skipped or out of order, or ``next`` null before the last page,
is a :class:`SimsRequestError`: the run stores nothing). Throttling (429) and 5xx are
retried honouring ``Retry-After``. Errors name the data group, never the Organisation ID.
See ``docs/protocol.md``.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from b2b_hooks._http import SimsAuthError, SimsHttpHook, SimsLimitError, SimsRequestError

REQUIRED = (("login", "Client ID"), ("password", "Secret"),
            ("subscription_key", "Subscription Key"), ("organisation_id", "Organisation ID"))


@dataclass(frozen=True)
class Page:
    group: str
    page: int
    total_pages: int
    total_items: int
    content: bytes  # the page exactly as received (stored as an inbound file)


class SimsPrimaryHook(SimsHttpHook):
    """Talks to the SIMS Primary API for one organisation."""

    conn_name_attr = "sims_primary_conn_id"
    default_conn_name = "sims_primary_default"
    hook_name = "SIMS Primary (B2B:Student)"
    #: refresh a token this many seconds before it expires
    token_margin = 30.0

    def __init__(self, sims_primary_conn_id: str = default_conn_name, *, page_size: int = 500, **kwargs: Any) -> None:
        super().__init__(sims_primary_conn_id, **kwargs)
        self.sims_primary_conn_id = sims_primary_conn_id
        self.page_size = page_size
        self._token: str | None = None
        self._token_expires = 0.0
        self.tokens_fetched = 0

    @classmethod
    def get_ui_field_behaviour(cls) -> dict:
        return {"hidden_fields": [], "relabeling": {"login": "Client ID", "password": "Secret"},
                "placeholders": {"extra": '{"subscription_key": "...", "organisation_id": "..."}'}}

    # ------------------------------------------------------------ settings
    def settings(self) -> dict[str, str]:
        """The four F1 settings; a clear error naming each missing one (never its value)."""
        c = self.connection
        # (stray white space around a pasted value, a trailing line break: a header cannot carry
        # it, and requests' error would print the value)
        values = {k: v.strip() if isinstance(v, str) else v for k, v in (
            ("login", c.login), ("password", c.password), ("subscription_key", self.extra.get("subscription_key")),
            ("organisation_id", self.extra.get("organisation_id")))}
        missing = [label for key, label in REQUIRED if not values[key]]
        if missing:
            raise SimsAuthError(f"connection {self.conn_id!r} lacks {', '.join(missing)}: "
                                "SIMS Primary needs all four settings (F1)")
        return {k: str(v) for k, v in values.items()}

    # ------------------------------------------------------------ tokens
    def get_token(self, *, force: bool = False) -> str:
        now = time.monotonic()
        if not force and self._token and now < self._token_expires:
            return self._token
        s = self.settings()
        resp = self.request("POST", "/sims-primary/oauth2/token", label="token request",
                            data={"grant_type": "client_credentials", "client_id": s["login"],
                                  "client_secret": s["password"]})
        if resp.status_code in (400, 401, 403):
            raise SimsAuthError(f"SIMS Primary refused the Client ID/Secret of connection {self.conn_id!r} "
                                f"(HTTP {resp.status_code} {self._error_text(resp)})".rstrip())
        if resp.status_code != 200:
            raise SimsRequestError(f"connection {self.conn_id!r}: token request failed with HTTP {resp.status_code}")
        try:
            body = resp.json()
            self._token = str(body["access_token"])
            lifetime = float(body.get("expires_in") or 0)
        except (ValueError, TypeError, KeyError, AttributeError):
            raise SimsRequestError(f"connection {self.conn_id!r}: the token response has no access_token") from None
        self._token_expires = now + max(0.0, lifetime - min(self.token_margin, lifetime / 4))
        self.tokens_fetched += 1
        self.log.info("connection %s: new access token (expires in %ss)", self.conn_id, int(lifetime))
        return self._token

    # ------------------------------------------------------------ data groups
    def _get(self, path: str, params: dict | None, *, label: str, deadline: float) -> Any:
        s = self.settings()
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self.get_token(force=attempt == 2)}",
                       "Ocp-Apim-Subscription-Key": s["subscription_key"]}
            resp = self.request("GET", path, params=params, headers=headers, label=label, deadline=deadline)
            if resp.status_code == 401 and "invalid_token" in resp.headers.get("WWW-Authenticate", "") \
                    and attempt == 1:
                self.log.info("connection %s: token rejected, refreshing once", self.conn_id)
                continue
            return resp
        return resp

    def _page(self, group: str, path: str, params: dict | None, *, label: str,
              deadline: float) -> tuple[Page, str | None]:
        resp = self._get(path, params, label=label, deadline=deadline)
        if resp.status_code == 401:
            raise SimsAuthError(f"connection {self.conn_id!r}: SIMS Primary refused access to {group} "
                                f"(HTTP 401 {self._error_text(resp)}); check the Subscription Key and Secret")
        if resp.status_code == 403:
            raise SimsAuthError(f"connection {self.conn_id!r}: the client is not permitted for its "
                                "Organisation ID (HTTP 403)")
        if resp.status_code != 200:
            raise SimsRequestError(f"connection {self.conn_id!r}: data group {group} failed with HTTP "
                                   f"{resp.status_code} {self._error_text(resp)}".rstrip())
        try:
            body = resp.json()
        except RecursionError:  # nested beyond the JSON parser's limit: not a page anyone can read
            raise SimsRequestError(f"connection {self.conn_id!r}: {label} is not a SIMS Primary page "
                                   "(its JSON is nested too deeply to be read)") from None
        except ValueError:
            raise SimsRequestError(f"connection {self.conn_id!r}: {label} is not a SIMS Primary page "
                                   "(not JSON)") from None
        if not isinstance(body, dict) or any(k not in body for k in ("page", "totalPages", "totalItems")):
            raise SimsRequestError(f"connection {self.conn_id!r}: {label} is not a SIMS Primary page "
                                   "(no page / totalPages / totalItems)")
        numbers = {k: body[k] for k in ("page", "totalPages", "totalItems")}
        for key, value in numbers.items():
            # JSON's whole numbers only: 2.5, "3", true or 1e999 (a float, infinite) are not page counts
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "page" else 0):
                raise SimsRequestError(f"connection {self.conn_id!r}: {label} is not a SIMS Primary page "
                                       f"({key} is not a whole number{' from 1' if key == 'page' else ''})")
        page = Page(group, numbers["page"], numbers["totalPages"], numbers["totalItems"], resp.content)
        nxt = body.get("next")
        if nxt is not None and not isinstance(nxt, str):
            raise SimsRequestError(f"connection {self.conn_id!r}: {label} has a 'next' link that is not a URL")
        return page, nxt

    def iter_pages(self, group: str, *, until: datetime, since: datetime | None = None,
                   ncys: Sequence[str] | None = None, student_group: str = "ncy") -> Iterator[Page]:
        """Every page of one data group for the window, following ``next`` links.

        ``student_group`` is the task's F23 group (``ncy``, ``lac``, ``leavers``), sent as
        ``studentGroup``: a LAC task asks for looked-after children only, a leavers task for
        leavers only. A ``next`` link is followed only on the connection's own origin; at most
        ``max_pages`` pages are followed, and all of them must arrive within
        ``message_deadline_s``.
        """
        from urllib.parse import urljoin

        org = self.settings()["organisation_id"]
        params: dict[str, str] | None = {"changedUntil": until.isoformat(), "page": "1",
                                          "pageSize": str(self.page_size)}
        assert params is not None
        if since is not None:
            params["changedSince"] = since.isoformat()
        if ncys:
            params["ncy"] = ",".join(ncys)
        if student_group != "ncy":
            params["studentGroup"] = student_group
        path: str | None = f"/sims-primary/api/v1/organisations/{org}/datagroups/{group}"
        deadline = self.deadline()
        seen = 0
        total: int | None = None  # pages the group has, as its first page says
        while path:
            seen += 1
            label = f"data group {group} page {seen}"
            if self.max_pages and seen > self.max_pages:
                raise SimsLimitError(f"connection {self.conn_id!r}: data group {group} has more than "
                                     f"{self.max_pages} pages (page cap B2B_MAX_PAGES); refused")
            page, nxt = self._page(group, path, params, label=label, deadline=deadline)
            if self.max_pages and page.total_pages > self.max_pages:
                raise SimsLimitError(f"connection {self.conn_id!r}: data group {group} claims "
                                     f"{page.total_pages:,} pages, over the page cap of {self.max_pages} "
                                     "(B2B_MAX_PAGES); refused")
            # the pages must run 1..totalPages in order, each once: a page missing, skipped or
            # repeated, or a 'next' of null before the last page, would lose pupils silently
            if total is None:
                total = max(page.total_pages, 1)  # (an empty group: one page of no items)
            if page.page != seen:
                raise SimsRequestError(f"connection {self.conn_id!r}: data group {group}: expected page {seen}, "
                                       f"received page {page.page} (pages must run 1..{total} in order)")
            if max(page.total_pages, 1) != total:
                raise SimsRequestError(f"connection {self.conn_id!r}: data group {group}: page {seen} says "
                                       f"{page.total_pages} page(s), page 1 said {total}")
            if seen > total:
                raise SimsRequestError(f"connection {self.conn_id!r}: data group {group} pagination does not end "
                                       f"(page {seen} of {total})")
            if not nxt and seen < total:
                raise SimsRequestError(f"connection {self.conn_id!r}: data group {group} ended at page {seen} "
                                       f"of {total} (no next link): page(s) {seen + 1}..{total} missing")
            yield page
            if nxt:
                # resolve against the page's own URL, then refuse any other origin (nothing is sent there)
                here = path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"
                nxt = urljoin(here, nxt)
                self._check_url(nxt)
            path, params = nxt, None
        self.log.info("connection %s: data group %s, %d page(s)", self.conn_id, group, seen)

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.get_token(force=True)
            return True, "token issued"
        except Exception as exc:  # noqa: BLE001 - UI feedback
            return False, str(exc)
