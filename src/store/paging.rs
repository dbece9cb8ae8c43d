//! Keyset paging shared by the listings: rows strictly after a (created_at, id)
//! position, so pages stay stable while rows are added.

use sea_orm::{ColumnTrait, Condition};

/// One page of rows, and whether more follow.
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_more: bool,
}

impl<T> Page<T> {
    /// From up to `limit + 1` rows: the extra one only says that more follow.
    pub(super) fn from_rows(mut items: Vec<T>, limit: u64) -> Self {
        let has_more = items.len() as u64 > limit;
        items.truncate(limit as usize);
        Page { items, has_more }
    }
}

/// `created_at > at OR (created_at = at AND id > id)`.
pub(super) fn after(
    created_at: impl ColumnTrait,
    id_column: impl ColumnTrait,
    (at, id): (i64, String),
) -> Condition {
    Condition::any().add(created_at.gt(at)).add(
        Condition::all()
            .add(created_at.eq(at))
            .add(id_column.gt(id)),
    )
}
