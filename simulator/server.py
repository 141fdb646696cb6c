"""The simulator's HTTP server: SIMS 7 exports and the SIMS Primary API (docs/protocol.md).

Standard library only (``ThreadingHTTPServer``), bound to loopback by default.
"""
from __future__ import annotations

import base64
import hmac
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

from simulator.world import SimulatorError, World

log = logging.getLogger(__name__)
PRIMARY_API = "/sims-primary/api/v1/organisations/"


@dataclass
class _Fault:
    prefix: str
    status: int
    count: int
    retry_after: float | None


@dataclass
class SimState:
    world: World
    token_lifetime: float
    tokens: dict = field(default_factory=dict)  # token -> (dfe, expires_at)
    faults: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _parse_dt(value: str | None, name: str) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SimulatorError(f"'{name}' is not an ISO 8601 datetime") from None
    if dt.tzinfo is None:
        raise SimulatorError(f"'{name}' must carry a UTC offset")
    return dt


class Handler(BaseHTTPRequestHandler):
    server_version = "SIMS-Simulator/1.0"
    protocol_version = "HTTP/1.1"

    @property
    def sim(self) -> SimState:
        return self.server.sim  # type: ignore[attr-defined]

    def log_message(self, fmt, *args):  # no personal data; debug only
        log.debug("%s %s", self.address_string(), fmt % args)

    # ------------------------------------------------------------ plumbing
    def _send(self, status: int, body: bytes, ctype: str = "application/json", headers: dict | None = None):
        prefix = "/" + "/".join(self.path.split("?")[0].split("/")[1:3])
        with self.sim.lock:
            key = f"{prefix} {status}"
            self.sim.stats[key] = self.sim.stats.get(key, 0) + 1
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict | None = None):
        self._send(status, json.dumps(obj).encode(), headers=headers)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _fault(self, path: str) -> bool:
        with self.sim.lock:
            for f in self.sim.faults:
                if f.count > 0 and path.startswith(f.prefix):
                    f.count -= 1
                    status, retry = f.status, f.retry_after
                    break
            else:
                return False
        headers = {"Retry-After": str(int(retry) if float(retry).is_integer() else retry)} if retry is not None else None
        self._json(status, {"error": "injected fault"}, headers)
        return True

    # ------------------------------------------------------------ routes
    def do_GET(self):
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if url.path == "/_sim/health":
                return self._json(200, {"status": "ok"})
            if url.path == "/_sim/stats":
                with self.sim.lock:
                    stats = dict(self.sim.stats)
                return self._json(200, stats)
            if self._fault(url.path):
                return None
            if url.path.startswith("/sims7/v1/bases/") and url.path.endswith("/export"):
                return self._sims7_export(url.path.split("/")[4], q)
            if url.path.startswith(PRIMARY_API):
                return self._primary_group(url.path, q)
            return self._json(404, {"error": "not found"})
        except SimulatorError as exc:
            return self._json(400, {"error": str(exc)})
        except LookupError as exc:
            return self._json(404, {"error": str(exc).strip("'\"")})

    def do_POST(self):
        url = urlsplit(self.path)
        body = self._body()
        try:
            if url.path == "/_sim/faults":
                d = json.loads(body or b"{}")
                with self.sim.lock:
                    self.sim.faults.append(_Fault(d.get("path_prefix", "/"), int(d.get("status", 503)),
                                                  int(d.get("count", 1)), d.get("retry_after")))
                return self._json(200, {"ok": True})
            if url.path == "/_sim/token-lifetime":
                self.sim.token_lifetime = float(json.loads(body)["seconds"])
                return self._json(200, {"ok": True})
            if self._fault(url.path):
                return None
            if url.path == "/sims-primary/oauth2/token":
                return self._token(body)
            if url.path.startswith("/sims7/v1/bases/") and url.path.endswith("/import"):
                return self._sims7_import(url.path.split("/")[4], body)
            return self._json(404, {"error": "not found"})
        except SimulatorError as exc:
            return self._json(400, {"error": str(exc)})
        except (ValueError, KeyError) as exc:
            return self._json(400, {"error": f"bad request: {type(exc).__name__}"})

    # ------------------------------------------------------------ SIMS 7
    def _sims7_authorised(self, dfe: str) -> bool | None:
        """None (and a 404 sent) for an unknown base; False (and a 401 sent) for bad credentials."""
        world = self.sim.world
        base = world.bases.get(dfe)
        if base is None or base.kind != "sims7":
            self._json(404, {"error": f"unknown base {dfe}"})
            return None
        creds = world.credentials(dfe)
        auth = self.headers.get("Authorization", "")
        ok = False
        if auth.startswith("Basic "):
            try:
                user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                ok = hmac.compare_digest(user, creds["username"]) and hmac.compare_digest(pw, creds["password"])
            except (ValueError, UnicodeDecodeError):
                ok = False
        if not ok:
            self._json(401, {"error": "invalid credentials"}, {"WWW-Authenticate": 'Basic realm="SIMS"'})
        return ok

    def _sims7_export(self, dfe: str, q: dict):
        world = self.sim.world
        if not self._sims7_authorised(dfe):
            return None
        if "filter" not in q or "until" not in q:
            raise SimulatorError("'filter' and 'until' are required")
        ncys = None if q.get("ncy") in (None, "", "all") else q["ncy"].split(",")
        months = int(q["months"]) if q.get("months") else None
        body = world.export_sims7(
            dfe, q["filter"], _parse_dt(q["until"], "until"), _parse_dt(q.get("since"), "since"),
            group=q.get("group", "ncy"), ncys=ncys, attendance=q.get("attendance"), months=months,
            hierarchies=q["hierarchies"].split(",") if q.get("hierarchies") else None)
        return self._send(200, body, "application/xml")

    def _sims7_import(self, dfe: str, body: bytes):
        """An LA return message (F25/F28): validated against b2b_return.xsd, then applied."""
        from simulator.returns import parse_return

        if not self._sims7_authorised(dfe):
            return None
        header, pupils = parse_return(body)
        if header["dest_school"] != dfe:
            raise SimulatorError(f"message is for school {header['dest_school']}, not {dfe}")
        answer = self.sim.world.import_return(dfe, header["sent"], pupils)
        return self._json(200, dict(answer, messageId=header["message_id"], received=len(pupils)))

    # ------------------------------------------------------------ SIMS Primary
    def _token(self, body: bytes):
        form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
        if form.get("grant_type") != "client_credentials":
            return self._json(400, {"error": "unsupported_grant_type"})
        world = self.sim.world
        for dfe, b in world.bases.items():
            if b.kind != "sims_primary":
                continue
            c = world.credentials(dfe)
            if hmac.compare_digest(form.get("client_id", ""), c["client_id"]) and \
                    hmac.compare_digest(form.get("client_secret", ""), c["client_secret"]):
                token = secrets.token_urlsafe(24)
                with self.sim.lock:
                    self.sim.tokens[token] = (dfe, time.monotonic() + self.sim.token_lifetime)
                return self._json(200, {"access_token": token, "token_type": "Bearer",
                                        "expires_in": int(self.sim.token_lifetime)})
        return self._json(401, {"error": "invalid_client"})

    def _primary_group(self, path: str, q: dict):
        parts = path[len(PRIMARY_API):].split("/")
        if len(parts) != 3 or parts[1] != "datagroups":
            return self._json(404, {"error": "not found"})
        org, group = parts[0], parts[2]
        world = self.sim.world
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        with self.sim.lock:
            entry = self.sim.tokens.get(token)
        if entry is None or entry[1] < time.monotonic():
            return self._json(401, {"error": "invalid_token"},
                              {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        dfe = entry[0]
        creds = world.credentials(dfe)
        if not hmac.compare_digest(self.headers.get("Ocp-Apim-Subscription-Key", ""), creds["subscription_key"]):
            return self._json(401, {"statusCode": 401, "message": "Access denied due to invalid subscription key"})
        orgs = {world.credentials(d)["organisation_id"]: d for d, b in world.bases.items() if b.kind == "sims_primary"}
        if org not in orgs:
            return self._json(404, {"error": f"unknown organisation {org}"})
        if orgs[org] != dfe:
            return self._json(403, {"error": "client not permitted for this organisation"})
        until = _parse_dt(q.get("changedUntil"), "changedUntil")
        if until is None:
            raise SimulatorError("'changedUntil' is required")
        since = _parse_dt(q.get("changedSince"), "changedSince")
        try:
            page = int(q.get("page", 1))
            size = int(q.get("pageSize", 100))
        except ValueError:
            raise SimulatorError("'page' and 'pageSize' must be whole numbers") from None
        if page < 1 or not 1 <= size <= 500:
            raise SimulatorError("'page' must be >= 1 and 'pageSize' between 1 and 500")
        ncys = q["ncy"].split(",") if q.get("ncy") else None
        student_group = q.get("studentGroup") or "ncy"  # F23: ncy (default), lac, leavers
        items = world.primary_datagroup(dfe, group, until, since, ncys, student_group)
        total_pages = max(1, -(-len(items) // size))
        nxt = None
        if page < total_pages:
            nq = dict(q, page=str(page + 1))
            nxt = f"{path}?{urlencode(nq)}"
        return self._json(200, {"organisationId": org, "dataGroup": group, "page": page, "pageSize": size,
                                "totalItems": len(items), "totalPages": total_pages, "next": nxt,
                                "items": items[(page - 1) * size: page * size]})


class SimServer:
    def __init__(self, world: World, host: str = "127.0.0.1", port: int = 0):
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.httpd.sim = SimState(world, float(world.config.token_lifetime))  # type: ignore[attr-defined]
        self.host, self.port = self.httpd.server_address[:2]
        self.base_url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="sims-simulator", daemon=True)

    def start(self) -> SimServer:
        self._thread.start()
        return self

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()


def start_server(world: World, host: str = "127.0.0.1", port: int = 0) -> SimServer:
    """Serve ``world`` in a background thread; ``.base_url``, ``.shutdown()``."""
    return SimServer(world, host, port).start()
