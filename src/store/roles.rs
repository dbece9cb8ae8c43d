//! The role graph as rows: `roles`, the edges in `role_includes` and the
//! permissions in `role_permissions`. Every edit runs in one transaction that holds
//! the graph's lock (an advisory lock on PostgreSQL; SQLite's one writer), reads the
//! graph inside it, lets the caller decide on that graph, and writes: so two
//! concurrent edits are decided one after the other and never make a cycle
//! together.

use std::collections::{BTreeMap, BTreeSet};

use sea_orm::{
    sea_query::Expr, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use super::{
    changes::{self, ChangeKind},
    entities::{api_key, role, role_include, role_permission, user_role},
    locks::{self, AdvisoryLock},
    Store, StoreError,
};

/// A role with its direct includes and its own permissions, as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleDefinition {
    pub name: String,
    pub description: String,
    /// The roles it includes directly, sorted.
    pub includes: Vec<String>,
    /// The permissions it carries itself, sorted.
    pub permissions: Vec<String>,
    pub builtin: bool,
    /// Display order, lowest first.
    pub rank: i32,
}

/// The graph as one edit finds it, inside the edit's transaction.
#[derive(Debug)]
pub struct RoleGraphState {
    pub roles: Vec<RoleDefinition>,
    /// Roles a user or a live API key holds directly.
    pub held: BTreeSet<String>,
}

impl RoleGraphState {
    pub fn find(&self, name: &str) -> Option<&RoleDefinition> {
        self.roles.iter().find(|r| r.name == name)
    }
}

/// What an edit decided to write.
#[derive(Debug)]
pub enum RoleEdit {
    /// A new role (its `rank` and `builtin` are set here).
    Create(RoleDefinition),
    /// New description, includes and permissions for an existing role.
    Update(RoleDefinition),
    Delete(String),
}

impl Store {
    /// Every role, lowest rank first.
    pub async fn role_graph(&self) -> Result<Vec<RoleDefinition>, StoreError> {
        read_graph(&self.reader).await
    }

    /// Reads the graph inside a write transaction holding the graph's lock, asks
    /// `decide` what to write, writes it with a change row, and commits. `decide`'s
    /// refusal rolls back and is handed back as `Ok(Err(_))`.
    #[tracing::instrument(name = "db.edit_role_graph", skip_all)]
    pub async fn edit_role_graph<E>(
        &self,
        now_ms: i64,
        decide: impl FnOnce(&RoleGraphState) -> Result<RoleEdit, E>,
    ) -> Result<Result<RoleDefinition, E>, StoreError> {
        let txn = self.begin_write().await?;
        locks::serialize(&txn, self.backend, AdvisoryLock::RoleGraph).await?;
        let state = RoleGraphState {
            roles: read_graph(&*txn).await?,
            held: held_roles(&*txn, now_ms).await?,
        };
        let edit = match decide(&state) {
            Ok(edit) => edit,
            Err(refusal) => {
                txn.rollback().await?;
                return Ok(Err(refusal));
            }
        };
        let written = match edit {
            RoleEdit::Create(mut new) => {
                new.rank = state.roles.iter().map(|r| r.rank).max().unwrap_or(0) + 1;
                new.builtin = false;
                role::Entity::insert(role::ActiveModel {
                    name: Set(new.name.clone()),
                    rank: Set(new.rank),
                    description: Set(new.description.clone()),
                    builtin: Set(false),
                })
                .exec_without_returning(&*txn)
                .await?;
                write_edges(&*txn, &new).await?;
                new
            }
            RoleEdit::Update(mut changed) => {
                let Some(old) = state.find(&changed.name) else {
                    txn.rollback().await?;
                    return Err(StoreError::Missing("role"));
                };
                changed.rank = old.rank;
                changed.builtin = old.builtin;
                role::Entity::update_many()
                    .col_expr(
                        role::Column::Description,
                        Expr::value(changed.description.clone()),
                    )
                    .filter(role::Column::Name.eq(&changed.name))
                    .exec(&*txn)
                    .await?;
                clear_edges(&*txn, &changed.name).await?;
                write_edges(&*txn, &changed).await?;
                changed
            }
            RoleEdit::Delete(name) => {
                let Some(old) = state.find(&name).cloned() else {
                    txn.rollback().await?;
                    return Err(StoreError::Missing("role"));
                };
                clear_edges(&*txn, &name).await?;
                role::Entity::delete_by_id(name.clone()).exec(&*txn).await?;
                old
            }
        };
        changes::append(&txn, self.backend, ChangeKind::Role, &written.name, now_ms).await?;
        txn.commit().await?;
        Ok(Ok(written))
    }
}

async fn read_graph(db: &impl ConnectionTrait) -> Result<Vec<RoleDefinition>, StoreError> {
    let mut includes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for edge in role_include::Entity::find()
        .order_by_asc(role_include::Column::Included)
        .all(db)
        .await?
    {
        includes.entry(edge.role).or_default().push(edge.included);
    }
    let mut permissions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for grant in role_permission::Entity::find()
        .order_by_asc(role_permission::Column::Permission)
        .all(db)
        .await?
    {
        permissions
            .entry(grant.role)
            .or_default()
            .push(grant.permission);
    }
    Ok(role::Entity::find()
        .order_by_asc(role::Column::Rank)
        .order_by_asc(role::Column::Name)
        .all(db)
        .await?
        .into_iter()
        .map(|row| RoleDefinition {
            includes: includes.remove(&row.name).unwrap_or_default(),
            permissions: permissions.remove(&row.name).unwrap_or_default(),
            name: row.name,
            description: row.description,
            builtin: row.builtin,
            rank: row.rank,
        })
        .collect())
}

/// Roles granted to a user or held by a live API key.
async fn held_roles(
    db: &impl ConnectionTrait,
    now_ms: i64,
) -> Result<BTreeSet<String>, StoreError> {
    let mut held: BTreeSet<String> = user_role::Entity::find()
        .select_only()
        .column(user_role::Column::Role)
        .distinct()
        .into_tuple::<String>()
        .all(db)
        .await?
        .into_iter()
        .collect();
    let key_roles: Vec<String> = api_key::Entity::find()
        .select_only()
        .column(api_key::Column::Roles)
        .filter(super::api_keys::live(now_ms))
        .into_tuple()
        .all(db)
        .await?;
    for roles in key_roles {
        held.extend(
            roles
                .split(',')
                .filter(|r| !r.is_empty())
                .map(str::to_owned),
        );
    }
    Ok(held)
}

async fn clear_edges(db: &impl ConnectionTrait, name: &str) -> Result<(), StoreError> {
    role_include::Entity::delete_many()
        .filter(role_include::Column::Role.eq(name))
        .exec(db)
        .await?;
    role_permission::Entity::delete_many()
        .filter(role_permission::Column::Role.eq(name))
        .exec(db)
        .await?;
    Ok(())
}

async fn write_edges(db: &impl ConnectionTrait, role: &RoleDefinition) -> Result<(), StoreError> {
    if !role.includes.is_empty() {
        role_include::Entity::insert_many(role.includes.iter().map(|included| {
            role_include::ActiveModel {
                role: Set(role.name.clone()),
                included: Set(included.clone()),
            }
        }))
        .exec_without_returning(db)
        .await?;
    }
    if !role.permissions.is_empty() {
        role_permission::Entity::insert_many(role.permissions.iter().map(|permission| {
            role_permission::ActiveModel {
                role: Set(role.name.clone()),
                permission: Set(permission.clone()),
            }
        }))
        .exec_without_returning(db)
        .await?;
    }
    Ok(())
}
