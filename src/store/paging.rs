//! Keyset paging shared by the listings: rows strictly after a (created_at, id)
//! position, so pages stay stable while rows are added.

use sea_orm::{ColumnTrait, Condition};

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
