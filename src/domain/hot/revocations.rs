//! The values of the revocation stream (`WatchRevocations`): what a watcher is told,
//! where it may resume ([`Cursor`]), and which change rows tell it something.
//! The stream itself is `watchers.rs`'s.

use std::fmt;

use crate::{
    domain::error::{DomainError, DomainResult},
    store::{ChangeKind, ChangeRow},
};

/// What happened, as a watcher needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevocationKind {
    /// A session ended; its tokens are dead (subject: session id).
    SessionEnded,
    /// A user was deactivated; every token issued to it before is dead (subject:
    /// user id).
    UserDisabled,
    /// A user was erased; all its tokens are dead (subject: user id).
    UserDeleted,
    /// A user's roles changed: tokens issued before carry stale roles and are to be
    /// checked with ValidateToken (subject: user id).
    UserRolesChanged,
    /// A role's definition changed: tokens holding it carry stale roles or
    /// permissions (subject: role name).
    RoleChanged,
    /// An API key was revoked (subject: key id).
    ApiKeyRevoked,
    /// The signing keys changed (rotation, withdrawal): fetch the JWK Set again
    /// (subject: the kid concerned).
    SigningKeysChanged,
    /// The snapshot has been sent; live events follow. Its `occurred_at` is the
    /// earliest issue time the snapshot answers for (no subject).
    SnapshotComplete,
}

impl RevocationKind {
    /// What a change row tells a watcher, if anything. Rows of the older, coarser
    /// kinds are told in the way that is safe for what they may have meant: a
    /// user's change or ended sessions as a change of its roles (its earlier tokens
    /// are then checked again), an API key's change as its revocation.
    fn of(kind: ChangeKind) -> Option<RevocationKind> {
        Some(match kind {
            ChangeKind::SessionEnded => RevocationKind::SessionEnded,
            ChangeKind::UserDisabled => RevocationKind::UserDisabled,
            ChangeKind::UserDeleted => RevocationKind::UserDeleted,
            ChangeKind::UserRoles | ChangeKind::User | ChangeKind::UserSessionsEnded => {
                RevocationKind::UserRolesChanged
            }
            ChangeKind::Role => RevocationKind::RoleChanged,
            ChangeKind::ApiKeyRevoked | ChangeKind::ApiKey => RevocationKind::ApiKeyRevoked,
            ChangeKind::SigningKeys => RevocationKind::SigningKeysChanged,
            ChangeKind::UserUpdated | ChangeKind::ApiKeyCreated => return None,
        })
    }
}

/// Where a watcher is in the change feed: the sequence number of the last change
/// it has been told about. Written as its decimal digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor(i64);

impl Cursor {
    /// The request's `after`: empty for none (start with a snapshot).
    pub fn parse(after: &str) -> DomainResult<Option<Cursor>> {
        if after.is_empty() {
            return Ok(None);
        }
        let malformed = || {
            DomainError::invalid(
                "after",
                "is not a cursor: pass the `cursor` of an event received, or nothing to \
                 start with a snapshot",
            )
        };
        if after.len() > 19 || !after.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        after
            .parse()
            .map(|seq| Some(Cursor(seq)))
            .map_err(|_| malformed())
    }

    pub(super) fn at(seq: i64) -> Cursor {
        Cursor(seq)
    }

    pub(super) fn seq(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One event of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationEvent {
    /// Resuming after this gives exactly the events after this one (events of
    /// the snapshot share the cursor where live events begin).
    pub cursor: Cursor,
    pub kind: RevocationKind,
    /// The session, user, role name, API key id or kid concerned.
    pub subject_id: String,
    /// Unix ms.
    pub occurred_at_ms: i64,
}

impl RevocationEvent {
    /// The event a change row makes, if it makes one.
    pub(super) fn of_change(row: &ChangeRow) -> Option<RevocationEvent> {
        Some(RevocationEvent {
            cursor: Cursor(row.seq),
            kind: RevocationKind::of(row.kind?)?,
            subject_id: row.subject.clone(),
            occurred_at_ms: row.created_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_the_digits_of_a_sequence_number() {
        assert_eq!(Cursor::parse("").ok(), Some(None));
        assert_eq!(Cursor::parse("0").ok(), Some(Some(Cursor(0))));
        assert_eq!(Cursor::parse("1234").ok(), Some(Some(Cursor(1234))));
        assert_eq!(Cursor(1234).to_string(), "1234");
        for bad in [
            "-1",
            "+1",
            " 1",
            "1 ",
            "1.0",
            "abc",
            "9223372036854775808",
            "99999999999999999999",
            "١٢",
        ] {
            assert!(
                matches!(
                    Cursor::parse(bad),
                    Err(DomainError::InvalidArgument { field: "after", .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rows_that_revoke_nothing_make_no_event() {
        let row = |kind| ChangeRow {
            seq: 7,
            kind: Some(kind),
            subject: "s".into(),
            created_at_ms: 1,
        };
        assert_eq!(
            RevocationEvent::of_change(&row(ChangeKind::UserUpdated)),
            None
        );
        assert_eq!(
            RevocationEvent::of_change(&row(ChangeKind::ApiKeyCreated)),
            None
        );
        let ended = RevocationEvent::of_change(&row(ChangeKind::SessionEnded)).expect("event");
        assert_eq!(
            (ended.cursor, ended.kind, ended.subject_id.as_str()),
            (Cursor(7), RevocationKind::SessionEnded, "s")
        );
        let unknown = ChangeRow {
            kind: None,
            ..row(ChangeKind::Role)
        };
        assert_eq!(RevocationEvent::of_change(&unknown), None);
    }
}
