"""Who may use the B2B screens.

FastAPI apps that a plugin adds to Airflow are **not** protected by Airflow's login: every
officer route here depends on :func:`current_officer`, which validates Airflow's JWT (the
``Authorization: Bearer`` header, else the ``_token`` cookie the Airflow UI sets at login) with
Airflow's own auth manager, exactly as ``airflow.api_fastapi.core_api.security.get_user`` does,
and then requires the **officer role**:

* simple auth manager (the default): the user's role must be one of ``$B2B_OFFICER_ROLES``
  (default ``op,admin``), e.g. ``[core] simple_auth_manager_users = "jane:op,reader:viewer"``;
* another auth manager (FAB, Keycloak, …): the user must be authorised on the custom view
  ``B2B review`` (``is_authorized_custom_view``), or be listed in ``$B2B_OFFICER_USERS``.

The logged-in user's name is what every decision records (``by``).

Schools never log in to Airflow: a school page is opened with the school's **access key**
(``b2b.outbound.reports.issue_token``; only its hash is stored), kept in an HttpOnly,
SameSite=Strict cookie; it only ever selects rows of that school's base.
"""
from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

from fastapi import HTTPException, Request, status

COOKIE_JWT = "_token"          # airflow.api_fastapi.auth.managers.base_auth_manager.COOKIE_NAME_JWT_TOKEN
COOKIE_SCHOOL = "b2b_school"
CUSTOM_VIEW = "B2B review"


def _token(request: Request) -> str | None:
    auth = request.headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.cookies.get(COOKIE_JWT)


def officer_roles() -> set[str]:
    return {r.strip().upper() for r in os.environ.get("B2B_OFFICER_ROLES", "op,admin").split(",") if r.strip()}


def is_officer(auth_manager: Any, user: Any) -> bool:
    listed = {u.strip() for u in os.environ.get("B2B_OFFICER_USERS", "").split(",") if u.strip()}
    if user.get_name() in listed:
        return True
    role = getattr(user, "role", None)
    if role is not None or type(auth_manager).__name__ == "SimpleAuthManager":
        return bool(role) and str(role).upper() in officer_roles()
    try:
        return bool(auth_manager.is_authorized_custom_view(method="POST", resource_name=CUSTOM_VIEW, user=user))
    except Exception:  # noqa: BLE001 - an auth manager without custom views: not an officer
        return False


class NotLoggedIn(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(status_code=status.HTTP_401_UNAUTHORIZED, detail=detail)


async def current_officer(request: Request) -> str:
    """The logged-in Airflow user's name, when that user holds the officer role; else 401/403."""
    from airflow.api_fastapi.app import get_auth_manager
    from jwt import InvalidTokenError

    token = _token(request)
    if not token:
        raise NotLoggedIn("Log in to Airflow to use the B2B review screens.")
    auth_manager = get_auth_manager()
    try:
        user = await auth_manager.get_user_from_token(token)
    except (InvalidTokenError, ValueError):
        raise NotLoggedIn("Your Airflow login is not valid or has expired: log in again.") from None
    if not is_officer(auth_manager, user):
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN,
                            detail=f"{user.get_name()} does not hold the B2B officer role.")
    request.state.b2b_csrf = csrf_for(token)
    return user.get_name()


def csrf_for(secret: str) -> str:
    """A form token bound to the caller's credential (another site can read neither)."""
    return hmac.new(secret.encode(), b"b2b-review-form", hashlib.sha256).hexdigest()[:32]


def check_csrf(request: Request, given: str | None) -> None:
    expected = getattr(request.state, "b2b_csrf", None)
    if not expected or not given or not hmac.compare_digest(expected, given):
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail="The form has expired: reload the page.")


def school_token(request: Request) -> str | None:
    return request.cookies.get(COOKIE_SCHOOL)
