//! The PostgreSQL advisory locks authd takes, in one place so that no two uses can
//! share a key by accident. SQLite needs none: it has one writer at a time (and
//! pruning takes a lease row there instead).

use sea_orm::{ConnectionTrait, DatabaseTransaction};

use super::{Backend, StoreError};

/// Every advisory lock, by what it serialises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AdvisoryLock {
    /// Migrations, held by a connection for the whole run.
    Migrations,
    /// Appends to the change feed, so that sequence order is commit order and a
    /// poller that has read up to `seq` can never later find a smaller one committed.
    ChangeFeed,
    /// Changes to who holds the guarded (admin) role, so two demotions cannot each
    /// leave the other as the last admin.
    AdminHolders,
    /// "Create the first signing key", so it happens once across replicas.
    FirstSigningKey,
    /// "Is this API-key name free?" with the insert.
    ApiKeyName,
    /// Pruning: held at session level by the one replica that prunes, for as long
    /// as it prunes (see `prune.rs`); the others skip their rounds.
    Pruning,
    /// Changes to the role graph, so that two concurrent edits can never together
    /// make a cycle that neither made alone.
    RoleGraph,
}

impl AdvisoryLock {
    /// The lock's key: "authd" in ASCII, then the lock's number.
    pub fn key(self) -> i64 {
        let number = match self {
            AdvisoryLock::Migrations => 1,
            AdvisoryLock::ChangeFeed => 2,
            AdvisoryLock::AdminHolders => 3,
            AdvisoryLock::FirstSigningKey => 4,
            AdvisoryLock::ApiKeyName => 5,
            AdvisoryLock::Pruning => 6,
            AdvisoryLock::RoleGraph => 7,
        };
        0x6175_7468_6400_0000 + number
    }
}

/// Takes `lock` until `txn` ends (a no-op on SQLite).
pub(super) async fn serialize(
    txn: &DatabaseTransaction,
    backend: Backend,
    lock: AdvisoryLock,
) -> Result<(), StoreError> {
    if backend == Backend::Postgres {
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({})", lock.key()))
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_are_those_of_the_first_release() {
        // Replicas of different versions must take the same locks.
        assert_eq!(AdvisoryLock::Migrations.key(), 0x6175_7468_6400_0001);
        assert_eq!(AdvisoryLock::ChangeFeed.key(), 0x6175_7468_6400_0002);
        assert_eq!(AdvisoryLock::AdminHolders.key(), 0x6175_7468_6400_0003);
        assert_eq!(AdvisoryLock::FirstSigningKey.key(), 0x6175_7468_6400_0004);
        assert_eq!(AdvisoryLock::ApiKeyName.key(), 0x6175_7468_6400_0005);
        assert_eq!(AdvisoryLock::Pruning.key(), 0x6175_7468_6400_0006);
        assert_eq!(AdvisoryLock::RoleGraph.key(), 0x6175_7468_6400_0007);
    }
}
