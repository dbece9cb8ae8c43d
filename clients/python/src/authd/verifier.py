"""Verifies authd's access tokens in this process, and knows when it cannot.

An access token is checked against authd's JWK Set with PyJWT (EdDSA, ``iss``,
``aud``, ``exp`` to the second with authd's one second of leeway), then against what
the revocation stream (``WatchRevocations``, followed by a background thread) has
said: a logged-out session, a deactivated user, a stale ``roles`` claim. A token
checked once costs a dictionary lookup after that.

Whatever it cannot decide alone goes to ``ValidateToken``: API keys (they are not
JWTs), a ``kid`` not in the JWK Set even after fetching it again, any token while the
stream's snapshot is incomplete or the stream has been down longer than
``max_outage`` seconds, tokens whose roles changed since they were issued, and
permissions (a token carries roles, not permissions). authd's answers are kept for a
while too, and dropped by the events that concern them; they are never kept while the
stream is not healthy.
"""

import collections
import hashlib
import logging
import threading
import time
import urllib.request
from typing import Callable, Dict, Optional

import grpc
import jwt

from .client import channel as make_channel
from .errors import Unauthenticated, Unavailable
from .pb import auth_pb2, auth_pb2_grpc
from .principal import Principal
from .revocations import Kind, RevocationState, Verdict

log = logging.getLogger("authd")

API_KEY_PREFIX = "authd_"
ALGORITHM = "EdDSA"
TOKEN_TYPE = "at+jwt"
LEEWAY_S = 1
MAX_TOKEN_BYTES = 8 * 1024
# gRPC codes that mean "start the stream again from a snapshot".
_RESTART = (grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.INVALID_ARGUMENT)


class Verifier:
    """A local, revocation-aware verifier of authd's access tokens and API keys.

    ``target`` is authd's gRPC address. The JWK Set comes from ``jwks_url`` (authd's
    ``/.well-known/jwks.json`` on its HTTP port) or, without one, from ``GetJwks``.
    Call :meth:`start` once (it starts the stream thread); :meth:`close` at the end.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        jwks_url: Optional[str] = None,
        credentials: Optional[grpc.ChannelCredentials] = None,
        issuer: str = "authd",
        audience: str = "authd",
        max_outage: float = 2.0,
        timeout: float = 2.0,
        cache_size: int = 10_000,
        remote_ttl: float = 300.0,
        jwks_min_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ):
        self._channel = make_channel(target, credentials)
        self._auth = auth_pb2_grpc.AuthServiceStub(self._channel)
        self._jwks_url = jwks_url
        self._issuer = issuer
        self._audience = audience
        self._timeout = timeout
        self._remote_ttl = remote_ttl
        self._jwks_min_interval = jwks_min_interval
        self._clock = clock
        self.revocations = RevocationState(max_outage=max_outage, clock=clock)
        self._keys: Dict[str, jwt.PyJWK] = {}
        self._keys_lock = threading.Lock()
        self._keys_fetched_at = float("-inf")
        self._claims = _Lru(cache_size)  # token -> verified claims
        self._remote = _Lru(cache_size)  # digest -> (Principal, valid until)
        self._remote_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._call = None
        self.remote_calls = 0
        """How many times authd was asked (``ValidateToken``), for tests and metrics."""

    # -- lifecycle -------------------------------------------------------------

    def start(self, wait: float = 5.0) -> "Verifier":
        """Fetches the JWK Set and starts following the revocation stream; waits up
        to ``wait`` seconds for its snapshot (until then, every check asks authd)."""
        try:
            self.refresh_keys()
        except Unavailable as err:
            log.warning("authd: no JWK Set yet (%s); asking authd until there is one", err)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._follow, name="authd-revocations", daemon=True
            )
            self._thread.start()
        deadline = time.monotonic() + wait
        while not self.revocations.healthy() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def close(self) -> None:
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._channel.close()

    def __enter__(self) -> "Verifier":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- checks ----------------------------------------------------------------

    def verify(self, token: str, *, need_permissions: bool = False) -> Principal:
        """The holder of ``token`` (an access token or an API key) as of now.
        Raises :class:`Unauthenticated`, or :class:`Unavailable` when authd had to
        be asked and could not answer."""
        local = self.verify_local(token, need_permissions=need_permissions)
        if local is not None:
            return local
        if not token.startswith(API_KEY_PREFIX) and self._unknown_kid(token):
            # Another key may have been rotated in a moment ago.
            try:
                self._refresh_keys(force=False)
            except Unavailable as err:
                log.warning("authd: %s", err)
            else:
                local = self.verify_local(token, need_permissions=need_permissions)
                if local is not None:
                    return local
        return self._ask_authd(token)

    def verify_local(self, token: str, *, need_permissions: bool = False) -> Optional[Principal]:
        """:meth:`verify` without any network call: the principal, ``None`` when
        only authd can decide, or :class:`Unauthenticated`."""
        if not token or len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated("missing or oversized credentials")
        remote = self._cached_remote(token)
        if remote is not None:
            return remote
        if token.startswith(API_KEY_PREFIX):
            return None
        claims = self._verified_claims(token)
        if claims is None:
            return None
        if claims["exp"] + LEEWAY_S < self._clock():
            raise Unauthenticated("the token is invalid, expired or revoked")
        roles = tuple(claims.get("roles") or ())
        verdict = self.revocations.judge(claims["sub"], claims["sid"], claims["iat"], roles)
        if verdict is Verdict.REVOKED:
            raise Unauthenticated("the token is invalid, expired or revoked")
        if verdict is Verdict.UNSURE or need_permissions:
            return None
        return Principal(
            user_id=claims["sub"],
            roles=roles,
            session_id=claims["sid"],
            expires_at=float(claims["exp"]),
            issued_at=float(claims["iat"]),
            verified_locally=True,
        )

    def _verified_claims(self, token: str) -> Optional[dict]:
        """The token's claims once its signature, issuer, audience and times verify
        (cached by token); ``None`` for a kid this verifier does not know."""
        claims = self._claims.get(token)
        if claims is not None:
            return claims
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("the token is invalid, expired or revoked") from None
        if header.get("alg") != ALGORITHM or header.get("typ") != TOKEN_TYPE:
            raise Unauthenticated("the token is invalid, expired or revoked")
        key = self._keys.get(header.get("kid") or "")
        if key is None:
            return None
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iat", "sub", "sid", "iss", "aud"]},
            )
        except jwt.PyJWTError:
            raise Unauthenticated("the token is invalid, expired or revoked") from None
        if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("sid"), str):
            raise Unauthenticated("the token is invalid, expired or revoked")
        self._claims.put(token, claims)
        return claims

    def _unknown_kid(self, token: str) -> bool:
        try:
            kid = jwt.get_unverified_header(token).get("kid") or ""
        except jwt.PyJWTError:
            return False
        return kid not in self._keys

    # -- authd's answers -------------------------------------------------------

    def _ask_authd(self, token: str) -> Principal:
        generation = self.revocations.generation
        with self._remote_lock:
            self.remote_calls += 1
        try:
            answer = self._auth.ValidateToken(
                auth_pb2.ValidateTokenRequest(token=token), timeout=self._timeout
            )
        except grpc.RpcError as err:
            code = err.code()
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT):
                raise Unauthenticated(err.details() or "invalid credentials") from None
            raise Unavailable(f"authd did not answer: {code.name} {err.details()}") from None
        principal = Principal(
            user_id=answer.user_id,
            username=answer.username,
            roles=tuple(answer.roles),
            permissions=tuple(answer.permissions),
            session_id=answer.session_id,
            expires_at=_seconds(answer.expires_at) if answer.HasField("expires_at") else None,
            issued_at=_seconds(answer.issued_at) if answer.HasField("issued_at") else None,
            is_api_key=not answer.session_id,
        )
        self._remember_remote(token, principal, generation)
        return principal

    def _remember_remote(self, token: str, principal: Principal, generation: int) -> None:
        now = self._clock()
        valid_until = now + self._remote_ttl
        if principal.expires_at is not None:
            valid_until = min(valid_until, principal.expires_at + LEEWAY_S)
        with self._remote_lock:
            # An event applied while authd was being asked may concern this answer.
            if generation == self.revocations.generation and self.revocations.healthy():
                self._remote.put(_digest(token), (principal, valid_until))

    def _cached_remote(self, token: str) -> Optional[Principal]:
        if not self._remote:
            return None
        if not self.revocations.healthy():
            with self._remote_lock:
                self._remote.clear()
            return None
        entry = self._remote.get(_digest(token))
        if entry is None:
            return None
        principal, valid_until = entry
        if self._clock() > valid_until:
            return None
        return principal

    def _forget_remote(self, concerns: Callable[[Principal], bool]) -> None:
        with self._remote_lock:
            self._remote.drop_where(lambda entry: concerns(entry[0]))

    # -- the JWK Set -------------------------------------------------------------

    def refresh_keys(self) -> None:
        """Fetches the JWK Set now (the stream asks for it when keys change)."""
        self._refresh_keys(force=True)

    def _refresh_keys(self, *, force: bool) -> None:
        with self._keys_lock:
            now = time.monotonic()
            if not force and now - self._keys_fetched_at < self._jwks_min_interval:
                return
            self._keys_fetched_at = now
            try:
                text = self._fetch_jwks()
                keys = {}
                for key in jwt.PyJWKSet.from_json(text).keys:
                    if key.key_id:
                        keys[key.key_id] = key
            except (OSError, ValueError, jwt.PyJWTError, grpc.RpcError) as err:
                raise Unavailable(f"cannot fetch authd's JWK Set: {err}") from None
            self._keys = keys

    def _fetch_jwks(self) -> str:
        if self._jwks_url is None:
            return self._auth.GetJwks(auth_pb2.GetJwksRequest(), timeout=self._timeout).jwks_json
        with urllib.request.urlopen(self._jwks_url, timeout=self._timeout) as response:
            return response.read().decode()

    # -- the revocation stream ---------------------------------------------------

    def _follow(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                self._watch_once()
                backoff = 0.05
            except grpc.RpcError as err:
                self.revocations.disconnected()
                if self._stop.is_set():
                    return
                if err.code() in _RESTART:
                    log.warning("authd: revocation stream %s; starting again", err.code().name)
                    self.revocations.reset()
                    self._claims.clear()
                else:
                    log.info("authd: revocation stream ended (%s); resuming", err.code().name)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 1.0)
            except Exception:  # noqa: BLE001: the thread must not die
                self.revocations.disconnected()
                log.exception("authd: revocation stream failed; resuming")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 1.0)

    def _watch_once(self) -> None:
        call = self._auth.WatchRevocations(
            auth_pb2.WatchRevocationsRequest(after=self.revocations.cursor)
        )
        self._call = call
        if self._stop.is_set():
            call.cancel()
            return
        call.initial_metadata()  # the stream is up once authd answers
        self.revocations.connected()
        for event in call:
            self._apply(event)
        # A stream that ends without a status is a server going away.
        self.revocations.disconnected()

    def _apply(self, event) -> None:
        self._apply_event(event.kind, event.subject_id, _seconds(event.occurred_at), event.cursor)

    def _apply_event(self, kind: int, subject: str, occurred_at: float, cursor: str = "") -> None:
        self.revocations.apply(kind, subject, occurred_at, cursor)
        if kind == Kind.SESSION_ENDED:
            self._forget_remote(lambda p: p.session_id == subject)
        elif kind in (Kind.USER_DISABLED, Kind.USER_DELETED, Kind.USER_ROLES_CHANGED):
            self._forget_remote(lambda p: not p.is_api_key and p.user_id == subject)
        elif kind == Kind.ROLE_CHANGED:
            self._forget_remote(lambda p: subject in p.roles)
        elif kind == Kind.API_KEY_REVOKED:
            self._forget_remote(lambda p: p.is_api_key and p.user_id == subject)
        elif kind == Kind.SIGNING_KEYS_CHANGED:
            self._claims.clear()
            self._forget_remote(lambda p: not p.is_api_key)
            try:
                self._refresh_keys(force=True)
            except Unavailable as err:
                log.warning("authd: %s", err)


class _Lru:
    """A dictionary that keeps its ``capacity`` most recently used entries."""

    def __init__(self, capacity: int):
        self._capacity = max(1, capacity)
        self._items: "collections.OrderedDict" = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key):
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def drop_where(self, predicate) -> None:
        with self._lock:
            for key in [k for k, v in self._items.items() if predicate(v)]:
                del self._items[key]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _seconds(timestamp) -> float:
    return timestamp.seconds + timestamp.nanos / 1e9

