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
until ``next`` is null; throttling (429) and 5xx are retried honouring
``Retry-After``. See ``docs/protocol.md``.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from b2b_hooks._http import SimsAuthError, SimsHttpHook, SimsRequestError

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

    def __init__(self, sims_primary_conn_id: str = default_conn_name, *, page_size: int = 500, **kwargs) -> None:
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
        values = {"login": c.login, "password": c.password,
                  "subscription_key": self.extra.get("subscription_key"),
                  "organisation_id": self.extra.get("organisation_id")}
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
        resp = self.request("POST", "/sims-primary/oauth2/token",
                            data={"grant_type": "client_credentials", "client_id": s["login"],
                                  "client_secret": s["password"]})
        if resp.status_code in (400, 401, 403):
            raise SimsAuthError(f"SIMS Primary refused the Client ID/Secret of connection {self.conn_id!r} "
                                f"(HTTP {resp.status_code} {self._error_text(resp)})".rstrip())
        if resp.status_code != 200:
            raise SimsRequestError(f"connection {self.conn_id!r}: token request failed with HTTP {resp.status_code}")
        body = resp.json()
        self._token = body["access_token"]
        lifetime = float(body.get("expires_in") or 0)
        self._token_expires = now + max(0.0, lifetime - min(self.token_margin, lifetime / 4))
        self.tokens_fetched += 1
        self.log.info("connection %s: new access token (expires in %ss)", self.conn_id, int(lifetime))
        return self._token

    # ------------------------------------------------------------ data groups
    def _get(self, path: str, params: dict | None):
        s = self.settings()
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self.get_token(force=attempt == 2)}",
                       "Ocp-Apim-Subscription-Key": s["subscription_key"]}
            resp = self.request("GET", path, params=params, headers=headers)
            if resp.status_code == 401 and "invalid_token" in resp.headers.get("WWW-Authenticate", "") \
                    and attempt == 1:
                self.log.info("connection %s: token rejected, refreshing once", self.conn_id)
                continue
            return resp
        return resp

    def _page(self, group: str, path: str, params: dict | None) -> tuple[Page, str | None]:
        resp = self._get(path, params)
        if resp.status_code == 401:
            raise SimsAuthError(f"connection {self.conn_id!r}: SIMS Primary refused access to {group} "
                                f"(HTTP 401 {self._error_text(resp)}); check the Subscription Key and Secret")
        if resp.status_code == 403:
            raise SimsAuthError(f"connection {self.conn_id!r}: the client is not permitted for its "
                                "Organisation ID (HTTP 403)")
        if resp.status_code != 200:
            raise SimsRequestError(f"connection {self.conn_id!r}: data group {group} failed with HTTP "
                                   f"{resp.status_code} {self._error_text(resp)}".rstrip())
        body = resp.json()
        page = Page(group, int(body["page"]), int(body["totalPages"]), int(body["totalItems"]), resp.content)
        return page, body.get("next")

    def iter_pages(self, group: str, *, until: datetime, since: datetime | None = None,
                   ncys: Sequence[str] | None = None) -> Iterator[Page]:
        """Every page of one data group for the window, following ``next`` links."""
        org = self.settings()["organisation_id"]
        params: dict[str, str] | None = {"changedUntil": until.isoformat(), "page": "1",
                                          "pageSize": str(self.page_size)}
        assert params is not None
        if since is not None:
            params["changedSince"] = since.isoformat()
        if ncys:
            params["ncy"] = ",".join(ncys)
        path: str | None = f"/sims-primary/api/v1/organisations/{org}/datagroups/{group}"
        seen = 0
        while path:
            page, nxt = self._page(group, path, params)
            seen += 1
            if seen > page.total_pages + 1:
                raise SimsRequestError(f"connection {self.conn_id!r}: data group {group} pagination does not end")
            yield page
            path, params = nxt, None
        self.log.info("connection %s: data group %s, %d page(s)", self.conn_id, group, seen)

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.get_token(force=True)
            return True, "token issued"
        except Exception as exc:  # noqa: BLE001 - UI feedback
            return False, str(exc)
