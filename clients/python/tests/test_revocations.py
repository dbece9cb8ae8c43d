"""What the revocation state concludes from the stream's events (no server needed)."""

import unittest

from authd.revocations import Kind, RevocationState, Verdict


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def ready(clock: Clock, **options) -> RevocationState:
    """Connected, with an empty snapshot that answers for tokens from an hour ago."""
    state = RevocationState(clock=clock, **options)
    state.connected()
    state.apply(Kind.SNAPSHOT_COMPLETE, "", clock.now - 3000, "c0")
    return state


class RevocationStateTest(unittest.TestCase):
    def test_nothing_is_trusted_before_the_snapshot_completes(self):
        clock = Clock()
        state = RevocationState(clock=clock)
        state.connected()
        self.assertFalse(state.healthy())
        state.apply(Kind.SESSION_ENDED, "s1", clock.now - 5, "c1")
        self.assertIs(state.judge("u1", "s2", clock.now - 10, ["user"]), Verdict.UNSURE)
        state.apply(Kind.SNAPSHOT_COMPLETE, "", clock.now - 3000, "c1")
        self.assertTrue(state.healthy())
        self.assertIs(state.judge("u1", "s2", clock.now - 10, ["user"]), Verdict.OK)
        self.assertIs(state.judge("u1", "s1", clock.now - 10, ["user"]), Verdict.REVOKED)
        self.assertEqual(state.cursor, "c1")

    def test_an_ended_session_or_deleted_user_is_revoked(self):
        clock = Clock()
        state = ready(clock)
        state.apply(Kind.SESSION_ENDED, "s1", clock.now, "c1")
        state.apply(Kind.USER_DELETED, "u9", clock.now, "c2")
        self.assertIs(state.judge("u1", "s1", clock.now - 60, []), Verdict.REVOKED)
        self.assertIs(state.judge("u9", "s5", clock.now - 60, []), Verdict.REVOKED)
        self.assertIs(state.judge("u1", "s2", clock.now - 60, []), Verdict.OK)

    def test_a_deactivation_revokes_the_tokens_issued_before_it(self):
        clock = Clock()
        state = ready(clock)
        state.apply(Kind.USER_DISABLED, "u1", clock.now - 100.5, "c1")
        self.assertIs(state.judge("u1", "s1", clock.now - 200, []), Verdict.REVOKED)
        # The change's own second: iat cannot tell before from after.
        self.assertIs(state.judge("u1", "s1", clock.now - 101, []), Verdict.UNSURE)
        # Reactivated and logged in again since.
        self.assertIs(state.judge("u1", "s2", clock.now - 50, []), Verdict.OK)

    def test_a_role_change_makes_older_roles_claims_unsure(self):
        clock = Clock()
        state = ready(clock)
        state.apply(Kind.USER_ROLES_CHANGED, "u1", clock.now - 100, "c1")
        state.apply(Kind.ROLE_CHANGED, "editor", clock.now - 100, "c2")
        self.assertIs(state.judge("u1", "s1", clock.now - 200, ["user"]), Verdict.UNSURE)
        self.assertIs(state.judge("u1", "s1", clock.now - 50, ["user"]), Verdict.OK)
        self.assertIs(state.judge("u2", "s2", clock.now - 200, ["editor"]), Verdict.UNSURE)
        self.assertIs(state.judge("u2", "s2", clock.now - 200, ["user"]), Verdict.OK)
        self.assertIs(state.judge("u2", "s2", clock.now - 50, ["editor"]), Verdict.OK)

    def test_tokens_older_than_the_snapshot_or_the_retention_are_unsure(self):
        clock = Clock()
        state = RevocationState(clock=clock, retention=600)
        state.connected()
        state.apply(Kind.SNAPSHOT_COMPLETE, "", clock.now - 300, "c0")
        self.assertIs(state.judge("u1", "s1", clock.now - 400, []), Verdict.UNSURE)
        self.assertIs(state.judge("u1", "s1", clock.now - 200, []), Verdict.OK)
        clock.now += 500
        self.assertIs(state.judge("u1", "s1", clock.now - 700, []), Verdict.UNSURE)

    def test_the_stream_may_be_down_for_the_bound_and_no_longer(self):
        clock = Clock()
        state = ready(clock, max_outage=2.0)
        state.disconnected()
        clock.now += 1.5
        self.assertTrue(state.healthy())
        self.assertIs(state.judge("u1", "s1", clock.now - 10, []), Verdict.OK)
        clock.now += 1.0
        self.assertFalse(state.healthy())
        self.assertIs(state.judge("u1", "s1", clock.now - 10, []), Verdict.UNSURE)
        # Resumed: what was known is kept, the cursor too.
        state.connected()
        self.assertTrue(state.healthy())
        self.assertEqual(state.cursor, "c0")

    def test_a_reset_starts_again_from_a_snapshot(self):
        clock = Clock()
        state = ready(clock)
        state.apply(Kind.SESSION_ENDED, "s1", clock.now, "c1")
        state.reset()
        self.assertEqual(state.cursor, "")
        self.assertFalse(state.healthy())
        state.apply(Kind.SNAPSHOT_COMPLETE, "", clock.now - 3000, "c2")
        self.assertIs(state.judge("u1", "s1", clock.now - 10, []), Verdict.OK)

    def test_what_is_older_than_the_retention_is_forgotten(self):
        clock = Clock()
        state = ready(clock, retention=600)
        state.apply(Kind.SESSION_ENDED, "s1", clock.now, "c1")
        clock.now += 700
        state.apply(Kind.SESSION_ENDED, "s2", clock.now, "c2")
        self.assertNotIn("s1", state._ended_sessions)
        # A token of s1 would be older than the retention: asked of authd, not trusted.
        self.assertIs(state.judge("u1", "s1", clock.now - 701, []), Verdict.UNSURE)


if __name__ == "__main__":
    unittest.main()
