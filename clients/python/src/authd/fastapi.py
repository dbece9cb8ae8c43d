"""FastAPI dependencies that delegate authentication and authorisation to authd:

    from authd.fastapi import configure, require_role
    configure("authd:50051", jwks_url="http://authd:9090/.well-known/jwks.json")

    @app.get("/drafts")
    async def drafts(user=Depends(require_role("editor"))):
        return {"hello": user.user_id}

The caller sends ``Authorization: Bearer <access token or API key>``. No or bad
credentials answer 401 with ``WWW-Authenticate: Bearer``; a valid credential without
the role or permission, 403; authd unreachable when it had to be asked, 503. The
dependency's value is the :class:`~authd.Principal`. Access tokens are verified in
this process (see :class:`~authd.Verifier`); what it cannot decide alone, and
``require_permission``'s permissions, are asked of authd off the event loop.

Without :func:`configure`, the first request configures from ``AUTHD_ADDR`` (default
``127.0.0.1:50051``) and ``AUTHD_JWKS_URL`` (default: ``GetJwks`` over gRPC).
"""

import os
import threading
from typing import Optional

from fastapi import Depends, HTTPException, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import Unauthenticated, Unavailable
from .principal import Principal
from .verifier import Verifier

__all__ = ["Principal", "configure", "require_permission", "require_role", "require_user"]

_verifier: Optional[Verifier] = None
_lock = threading.Lock()
_bearer = HTTPBearer(auto_error=False, description="An authd access token or API key")


def configure(target: Optional[str] = None, **options) -> Verifier:
    """Starts the process's verifier (``Verifier(target, **options)``) and returns
    it; the dependencies use it from then on."""
    global _verifier
    verifier = Verifier(target or os.environ.get("AUTHD_ADDR", "127.0.0.1:50051"), **options)
    verifier.start()
    with _lock:
        previous, _verifier = _verifier, verifier
    if previous is not None:
        previous.close()
    return verifier


def verifier() -> Verifier:
    """The process's verifier, configured from the environment on first use."""
    with _lock:
        if _verifier is not None:
            return _verifier
    return configure(jwks_url=os.environ.get("AUTHD_JWKS_URL") or None)


async def _principal(
    credentials: Optional[HTTPAuthorizationCredentials], need_permissions: bool
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise _unauthorized("missing credentials: send 'Authorization: Bearer <token>'")
    token = credentials.credentials
    checker = verifier()
    try:
        principal = checker.verify_local(token, need_permissions=need_permissions)
        if principal is None:
            principal = await run_in_threadpool(
                checker.verify, token, need_permissions=need_permissions
            )
    except Unauthenticated as err:
        raise _unauthorized(str(err)) from None
    except Unavailable as err:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(err)) from None
    return principal


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


def require_user():
    """A dependency: any valid access token or API key."""

    async def dependency(
        credentials: Optional[HTTPAuthorizationCredentials] = Depends(_bearer),
    ) -> Principal:
        return await _principal(credentials, need_permissions=False)

    return dependency


def require_role(role: str):
    """A dependency: a valid credential whose holder has ``role`` now, directly or
    through the role graph."""

    async def dependency(
        credentials: Optional[HTTPAuthorizationCredentials] = Depends(_bearer),
    ) -> Principal:
        principal = await _principal(credentials, need_permissions=False)
        if not principal.has_role(role):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs the role {role!r}")
        return principal

    return dependency


def require_permission(permission: str):
    """A dependency: a valid credential whose holder has ``permission`` now (asked
    of authd once per token, then kept until an event concerns it)."""

    async def dependency(
        credentials: Optional[HTTPAuthorizationCredentials] = Depends(_bearer),
    ) -> Principal:
        principal = await _principal(credentials, need_permissions=True)
        if not principal.has_permission(permission):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"this needs the permission {permission!r}"
            )
        return principal

    return dependency
