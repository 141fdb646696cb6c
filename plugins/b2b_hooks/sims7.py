"""Sims7Hook: fetch the output of a SIMS 7 scheduled task for one school (F12).

Connection (type ``http``), one per school because SIMS 7 credentials are per school:

==========  =====================================================
host        the B2B endpoint of the school's SIMS 7 server (or a URL)
port        optional
schema      ``https`` (default) or ``http``
login       the school's B2B username
password    the school's B2B password
extra       optional ``{"dfe": "8862001"}`` (checked against the base)
==========  =====================================================

Protocol: ``GET /sims7/v1/bases/{dfe}/export`` (exports) and ``POST
/sims7/v1/bases/{dfe}/import`` (LA returns, F25/F28) with HTTP Basic auth, see
``docs/protocol.md``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from b2b_hooks._http import SimsAuthError, SimsHttpHook, SimsRequestError


@dataclass(frozen=True)
class Sims7Message:
    dfe: str
    content: bytes
    content_type: str


class Sims7Hook(SimsHttpHook):
    """Talks to one school's SIMS 7 B2B endpoint."""

    conn_name_attr = "sims7_conn_id"
    default_conn_name = "sims7_default"
    hook_name = "SIMS 7 (B2B:Student)"

    def __init__(self, sims7_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(sims7_conn_id, **kwargs)
        self.sims7_conn_id = sims7_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict:
        return {"hidden_fields": [], "relabeling": {"login": "B2B username", "password": "B2B password"},
                "placeholders": {"host": "sims7.school.example", "extra": '{"dfe": "8862001"}'}}

    def _auth(self) -> tuple[str, str]:
        c = self.connection
        missing = [n for n, v in (("login", c.login), ("password", c.password)) if not v]
        if missing:
            raise SimsAuthError(f"connection {self.conn_id!r} lacks {', '.join(missing)} (SIMS 7 needs both, F12)")
        return c.login, c.password

    def _call(self, dfe: str, what: str, method: str, endpoint: str, **kwargs: Any) -> Any:
        """One request to the base's endpoint; a clear error for another base's connection,
        refused credentials or any other failure."""
        expected = self.extra.get("dfe")
        if expected and str(expected) != str(dfe):
            raise SimsRequestError(f"connection {self.conn_id!r} is for base {expected}, not {dfe}")
        resp = self.request(method, f"/sims7/v1/bases/{dfe}/{endpoint}", auth=self._auth(),
                            label=f"base {dfe} {what}", **kwargs)
        if resp.status_code in (401, 403):
            raise SimsAuthError(f"base {dfe}: SIMS 7 refused the credentials of connection {self.conn_id!r} "
                                f"(HTTP {resp.status_code}); check its login and password")
        if resp.status_code != 200:
            raise SimsRequestError(f"base {dfe}: SIMS 7 {what} failed with HTTP {resp.status_code}"
                                   + (f": {self._error_text(resp)}" if self._error_text(resp) else ""))
        return resp

    def export(self, dfe: str, *, filter: str, until: datetime, since: datetime | None = None,
               group: str = "ncy", ncys: Sequence[str] | None = None, attendance: str | None = None,
               months: int | None = None, hierarchies: Sequence[str] | None = None) -> Sims7Message:
        """One scheduled-task export for the window ``[since, until)`` as an XML message."""
        params: dict[str, str] = {"filter": filter, "until": until.isoformat(), "group": group,
                                  "ncy": ",".join(ncys) if ncys else "all"}
        if since is not None:
            params["since"] = since.isoformat()
        if attendance:
            params["attendance"] = attendance
        if months:
            params["months"] = str(months)
        if hierarchies:
            params["hierarchies"] = ",".join(hierarchies)
        resp = self._call(dfe, f"export {filter}", "GET", "export", params=params)
        self.log.info("base %s: received %s export, %d bytes", dfe, filter, len(resp.content))
        return Sims7Message(dfe, resp.content, resp.headers.get("Content-Type", "application/xml").split(";")[0])

    def import_return(self, dfe: str, message: bytes) -> dict:
        """Deliver an LA return message (``B2BReturn`` XML, F25/F28) to the school's SIMS 7.

        Returns the school's answer: ``{"applied": n, "refused": [{"guid", "reason"}], ...}``.
        """
        resp = self._call(dfe, "import", "POST", "import", data=message,
                          headers={"Content-Type": "application/xml"})
        answer = resp.json()
        self.log.info("base %s: return message delivered, %d bytes; %s applied, %d refused", dfe, len(message),
                      answer.get("applied"), len(answer.get("refused", [])))
        return answer

    def test_connection(self) -> tuple[bool, str]:
        try:
            self._auth()
            resp = self.request("GET", "/")  # reachability only; exports need a base and window
            return True, f"reachable (HTTP {resp.status_code})"
        except Exception as exc:  # noqa: BLE001 - UI feedback
            return False, str(exc)
