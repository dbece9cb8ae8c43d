"""Who a valid credential speaks for."""

from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class Principal:
    """The holder of a valid access token or API key.

    ``username`` and ``permissions`` are ``None`` when the token was verified
    locally: an access token carries neither (``sub``, ``sid`` and the effective
    ``roles`` at issue). Ask with ``need_permissions=True`` (as ``require_permission``
    does) to have them from authd.
    """

    user_id: str
    """The user's id, or the API key's id."""
    roles: Tuple[str, ...]
    """The effective roles, lowest first (``("viewer", "user", "editor")``)."""
    session_id: str
    """The session of an access token; empty for an API key."""
    expires_at: Optional[float]
    """Unix seconds; ``None`` for an API key that never expires."""
    issued_at: Optional[float]
    username: Optional[str] = None
    permissions: Optional[Tuple[str, ...]] = None
    is_api_key: bool = False
    verified_locally: bool = False
    """True when no call to authd was needed for this answer."""

    def has_role(self, role: str) -> bool:
        """Whether the holder has ``role``, directly or through the role graph."""
        return role in self.roles

    def has_permission(self, permission: str) -> bool:
        """Whether the holder has ``permission``; ``False`` when it is not known
        (verified locally), so ask with ``need_permissions=True``."""
        return self.permissions is not None and permission in self.permissions
