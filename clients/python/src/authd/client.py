"""A thin client of authd's gRPC API: the generated stubs on one channel, with the
calls a service makes most as methods. Everything else is on ``client.auth`` and
``client.admin_as(token)`` (the stubs themselves, so every method of the protos is
there). Failures are ``grpc.RpcError`` with authd's status code and message.
"""

from typing import Optional

import grpc

from .pb import admin_pb2_grpc, auth_pb2, auth_pb2_grpc


def channel(target: str, credentials: Optional[grpc.ChannelCredentials] = None) -> grpc.Channel:
    """A channel to authd's gRPC listener: plaintext, or TLS with ``credentials``
    (``grpc.ssl_channel_credentials(ca_pem)``)."""
    if credentials is None:
        return grpc.insecure_channel(target)
    return grpc.secure_channel(target, credentials)


class _Bearer(grpc.UnaryUnaryClientInterceptor):
    """Adds ``authorization: Bearer <token>`` to every call. (gRPC's call
    credentials would refuse a plaintext channel, which local set-ups use.)"""

    def __init__(self, token: str):
        self._metadata = (("authorization", f"Bearer {token}"),)

    def intercept_unary_unary(self, continuation, details, request):
        metadata = tuple(details.metadata or ()) + self._metadata
        return continuation(details._replace(metadata=metadata), request)


class Client:
    """authd's AuthService (and AdminService, with a caller's token) on one channel."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        credentials: Optional[grpc.ChannelCredentials] = None,
        timeout: float = 5.0,
    ):
        self.channel = channel(target, credentials)
        self.auth = auth_pb2_grpc.AuthServiceStub(self.channel)
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def register(self, username: str, email: str, password: str, full_name: str = ""):
        return self.auth.Register(
            auth_pb2.RegisterRequest(
                username=username, email=email, password=password, full_name=full_name
            ),
            timeout=self.timeout,
        ).user

    def login(self, username: str, password: str) -> auth_pb2.LoginResponse:
        """The whole answer: ``tokens`` and ``user``, or ``mfa_required`` and ``mfa_token``."""
        return self.auth.Login(
            auth_pb2.LoginRequest(username=username, password=password), timeout=self.timeout
        )

    def refresh(self, refresh_token: str) -> auth_pb2.TokenPair:
        return self.auth.Refresh(
            auth_pb2.RefreshRequest(refresh_token=refresh_token), timeout=self.timeout
        ).tokens

    def logout(self, refresh_token: str) -> None:
        self.auth.Logout(auth_pb2.LogoutRequest(refresh_token=refresh_token), timeout=self.timeout)

    def validate_token(self, token: str) -> auth_pb2.ValidateTokenResponse:
        return self.auth.ValidateToken(
            auth_pb2.ValidateTokenRequest(token=token), timeout=self.timeout
        )

    def check_role(self, token: str, role: str) -> bool:
        return self.auth.CheckRole(
            auth_pb2.CheckRoleRequest(token=token, role=role), timeout=self.timeout
        ).allowed

    def check_permission(self, token: str, permission: str) -> bool:
        return self.auth.CheckPermission(
            auth_pb2.CheckPermissionRequest(token=token, permission=permission),
            timeout=self.timeout,
        ).allowed

    def jwks_json(self) -> str:
        return self.auth.GetJwks(auth_pb2.GetJwksRequest(), timeout=self.timeout).jwks_json

    def admin_as(self, token: str) -> admin_pb2_grpc.AdminServiceStub:
        """AdminService, each call sending ``authorization: Bearer <token>``. Over a
        plaintext channel the token travels in the clear: use TLS beyond localhost."""
        return admin_pb2_grpc.AdminServiceStub(grpc.intercept_channel(self.channel, _Bearer(token)))
