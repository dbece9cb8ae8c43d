"""What the revocation stream (``AuthService.WatchRevocations``) has said, and what
follows for a token verified locally. Pure state, no I/O: the verifier's stream
thread applies events, request threads ask :meth:`RevocationState.judge`.

A verdict is ``OK`` (the token may be trusted with its claims), ``REVOKED`` (refuse
it) or ``UNSURE`` (ask authd): unsure while the snapshot is incomplete or the stream
has been down longer than the bound, for a token issued before what the snapshot
answers for, or one whose ``roles`` claim a later role change made stale.
"""

import enum
import math
import threading
import time
from typing import Callable, Dict, Iterable, Optional

from .pb import auth_pb2

Kind = auth_pb2.RevocationEvent.Kind


class Verdict(enum.Enum):
    OK = "ok"
    REVOKED = "revoked"
    UNSURE = "unsure"


class RevocationState:
    """Ended sessions, deactivated and deleted users and role changes, from the
    stream, each kept for ``retention`` seconds (tokens older than that are
    ``UNSURE``, so forgetting is safe); and whether the stream can be trusted."""

    def __init__(
        self,
        *,
        max_outage: float = 2.0,
        retention: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ):
        self.max_outage = max_outage
        self.retention = retention
        self._clock = clock
        self._lock = threading.Lock()
        self.cursor = ""
        self.generation = 0
        self._reset_locked()
        self._connected = False
        self._down_since: Optional[float] = clock()

    def _reset_locked(self) -> None:
        self.snapshot_complete = False
        self._horizon: Optional[float] = None
        self._ended_sessions: Dict[str, float] = {}
        self._disabled_users: Dict[str, float] = {}
        self._deleted_users: Dict[str, float] = {}
        self._user_roles_changed: Dict[str, float] = {}
        self._roles_changed: Dict[str, float] = {}
        self.generation += 1

    def reset(self) -> None:
        """Forgets everything: the next stream starts from a snapshot."""
        with self._lock:
            self.cursor = ""
            self._reset_locked()

    def connected(self) -> None:
        with self._lock:
            self._connected = True
            self._down_since = None

    def disconnected(self) -> None:
        with self._lock:
            if self._connected or self._down_since is None:
                self._down_since = self._clock()
            self._connected = False

    def healthy(self) -> bool:
        """Whether local answers may be trusted: the snapshot is complete and the
        stream is up, or has been down for at most ``max_outage`` seconds."""
        with self._lock:
            return self._healthy_locked(self._clock())

    def _healthy_locked(self, now: float) -> bool:
        if not self.snapshot_complete:
            return False
        if self._connected:
            return True
        return self._down_since is not None and now - self._down_since <= self.max_outage

    def apply(self, kind: int, subject: str, occurred_at: float, cursor: str) -> None:
        """One event of the stream."""
        with self._lock:
            self.generation += 1
            if cursor:
                self.cursor = cursor
            if kind == Kind.SESSION_ENDED:
                self._ended_sessions[subject] = occurred_at
            elif kind == Kind.USER_DISABLED:
                self._disabled_users[subject] = occurred_at
            elif kind == Kind.USER_DELETED:
                self._deleted_users[subject] = occurred_at
            elif kind == Kind.USER_ROLES_CHANGED:
                self._user_roles_changed[subject] = occurred_at
            elif kind == Kind.ROLE_CHANGED:
                self._roles_changed[subject] = occurred_at
            elif kind == Kind.SNAPSHOT_COMPLETE:
                self.snapshot_complete = True
                self._horizon = occurred_at
            # API_KEY_REVOKED and SIGNING_KEYS_CHANGED concern what the verifier
            # keeps itself (answers from authd, the JWK Set).
            self._prune_locked(self._clock())

    def _prune_locked(self, now: float) -> None:
        oldest = now - self.retention
        for kept in (
            self._ended_sessions,
            self._disabled_users,
            self._deleted_users,
            self._user_roles_changed,
            self._roles_changed,
        ):
            if kept and min(kept.values()) < oldest:
                for key in [k for k, at in kept.items() if at < oldest]:
                    del kept[key]

    def judge(self, user_id: str, session_id: str, issued_at: float, roles: Iterable[str]) -> Verdict:
        """What the stream says of a token of ``user_id`` in ``session_id`` issued at
        ``issued_at`` (whole seconds, as ``iat``) claiming ``roles``."""
        with self._lock:
            now = self._clock()
            if not self._healthy_locked(now):
                return Verdict.UNSURE
            if session_id in self._ended_sessions or user_id in self._deleted_users:
                return Verdict.REVOKED
            disabled = _order(issued_at, self._disabled_users.get(user_id))
            if disabled is _Order.BEFORE:
                return Verdict.REVOKED
            if disabled is _Order.SAME_SECOND:
                return Verdict.UNSURE
            if self._horizon is not None and issued_at < math.floor(self._horizon):
                return Verdict.UNSURE
            if issued_at < now - self.retention:
                return Verdict.UNSURE
            # The roles claim is stale after a change to the user's roles or to one
            # of the roles it names: authd knows the roles of now.
            if _order(issued_at, self._user_roles_changed.get(user_id)) is not _Order.AFTER:
                return Verdict.UNSURE
            for role in roles:
                if _order(issued_at, self._roles_changed.get(role)) is not _Order.AFTER:
                    return Verdict.UNSURE
            return Verdict.OK


class _Order(enum.Enum):
    BEFORE = "before"
    SAME_SECOND = "same second"
    AFTER = "after"


def _order(issued_at: float, changed_at: Optional[float]) -> _Order:
    """Whether a token was issued before a change (``AFTER`` when there was none).
    ``iat`` has whole seconds: a token of the change's own second cannot be placed."""
    if changed_at is None:
        return _Order.AFTER
    second = math.floor(changed_at)
    if issued_at < second:
        return _Order.BEFORE
    if issued_at == second:
        return _Order.SAME_SECOND
    return _Order.AFTER
