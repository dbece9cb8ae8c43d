"""authd for Python: a gRPC client, a local token verifier that follows authd's
revocation stream, and FastAPI dependencies (``authd.fastapi``).

    from authd import Client, Verifier

    client = Client("127.0.0.1:50051")
    tokens = client.login("alice", "correct horse battery staple").tokens

    verifier = Verifier("127.0.0.1:50051", jwks_url="http://127.0.0.1:9090/.well-known/jwks.json")
    verifier.start()
    principal = verifier.verify(tokens.access_token)   # local, revocation-aware
"""

from .client import Client
from .errors import AuthdError, PermissionDenied, Unauthenticated, Unavailable
from .principal import Principal
from .verifier import Verifier

__all__ = [
    "AuthdError",
    "Client",
    "PermissionDenied",
    "Principal",
    "Unauthenticated",
    "Unavailable",
    "Verifier",
]
__version__ = "0.1.0"
