"""What a check can answer besides a principal."""


class AuthdError(Exception):
    """Base of the errors this package raises."""


class Unauthenticated(AuthdError):
    """No credential, or one that does not verify: garbage, expired, logged out,
    revoked, a deactivated or deleted user. HTTP 401."""


class PermissionDenied(AuthdError):
    """A valid credential whose holder lacks the role or permission asked for. HTTP 403."""


class Unavailable(AuthdError):
    """authd could not be asked (unreachable, overloaded, its views stale), and the
    local verifier could not decide alone. HTTP 503."""
