//! Roles as data (AdminService ListRoles, CreateRole, UpdateRole, DeleteRole): the
//! graph operators define, the rules every edit obeys, and who may make it.
//!
//! Every edit is decided inside the store's serialised transaction on the graph
//! as it is there (so two concurrent edits cannot make a cycle together), then
//! applied to this replica's memory at once; other replicas follow the change feed.
//! Nobody grants through an edit a role or permission they do not hold.

use std::{collections::BTreeSet, sync::Arc};

use super::{
    admin::AdminCaller,
    audit::{Action, Event, Outcome},
    context::Context,
    error::{DomainError, DomainResult},
    hot::RoleCatalog,
    model::Role,
    validation,
};
use crate::store::{ChangeKind, RoleDefinition, RoleEdit, RoleGraphState};

/// The permissions that authorise AdminService's methods (API.md).
pub mod permissions {
    pub const USERS_READ: &str = "authd.users.read";
    pub const USERS_WRITE: &str = "authd.users.write";
    pub const ROLES_WRITE: &str = "authd.roles.write";
    pub const APIKEYS_WRITE: &str = "authd.apikeys.write";
    pub const AUDIT_READ: &str = "authd.audit.read";
}

/// At most this many includes or permissions in one role (the message limit is
/// the other bound).
const MAX_PER_ROLE: usize = 1000;
const DESCRIPTION_MAX_CHARS: usize = 256;

/// A role as CreateRole and UpdateRole ask for it.
#[derive(Debug, Default)]
pub struct RoleSpec {
    pub name: String,
    pub description: String,
    pub includes: Vec<String>,
    pub permissions: Vec<String>,
}

/// Which edit, for the audit trail and the rules that differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Create,
    Update,
}

/// The role-graph capability.
#[derive(Clone)]
pub struct Roles {
    ctx: Arc<Context>,
}

impl Roles {
    pub(super) fn new(ctx: Arc<Context>) -> Self {
        Roles { ctx }
    }

    /// Every role, lowest rank first (the five built-in ones, then those created).
    pub async fn list(&self) -> DomainResult<Vec<Role>> {
        let graph = self.ctx.store.role_graph().await?;
        Ok(graph.into_iter().map(Role::from).collect())
    }

    pub async fn create(&self, caller: &AdminCaller, spec: RoleSpec) -> DomainResult<Role> {
        self.edit(caller, Kind::Create, spec).await
    }

    /// Replaces description, includes and permissions.
    pub async fn update(&self, caller: &AdminCaller, spec: RoleSpec) -> DomainResult<Role> {
        self.edit(caller, Kind::Update, spec).await
    }

    async fn edit(&self, caller: &AdminCaller, kind: Kind, spec: RoleSpec) -> DomainResult<Role> {
        let wanted = checked(spec)?;
        let name = wanted.name.clone();
        let decided = self
            .ctx
            .store
            .edit_role_graph(self.ctx.now_ms(), |state| {
                decide(caller, kind, wanted, state)
            })
            .await?;
        let action = match kind {
            Kind::Create => Action::CreateRole,
            Kind::Update => Action::UpdateRole,
        };
        self.finish(caller, action, &name, decided).await
    }

    /// Refused for a built-in role, and while a user or live API key holds the
    /// role or another role includes it.
    pub async fn delete(&self, caller: &AdminCaller, name: &str) -> DomainResult<()> {
        validation::required("name", name)?;
        let decided = self
            .ctx
            .store
            .edit_role_graph(self.ctx.now_ms(), |state| decide_delete(name, state))
            .await?;
        self.finish(caller, Action::DeleteRole, name, decided)
            .await
            .map(drop)
    }

    /// Applies a written edit to this replica's memory and audits the outcome.
    async fn finish(
        &self,
        caller: &AdminCaller,
        action: Action,
        name: &str,
        decided: Result<RoleDefinition, DomainError>,
    ) -> DomainResult<Role> {
        match decided {
            Ok(written) => {
                self.ctx.hot.apply(ChangeKind::Role, name).await;
                let detail = format!(
                    "includes={} permissions={}",
                    written.includes.join(","),
                    written.permissions.join(",")
                );
                self.record(caller, action, Outcome::Ok, name, detail).await;
                Ok(written.into())
            }
            Err(err) => {
                if matches!(err, DomainError::PermissionDenied(_)) {
                    let detail = err.to_string();
                    self.record(caller, action, Outcome::RefusedEscalation, name, detail)
                        .await;
                }
                Err(err)
            }
        }
    }

    async fn record(
        &self,
        caller: &AdminCaller,
        action: Action,
        outcome: Outcome,
        name: &str,
        detail: String,
    ) {
        let event = Event::new(action, outcome).subject(name).detail(detail);
        self.ctx.audit.record(caller.caller(), event).await;
    }
}

/// The request's own rules: names, sizes, no repeats (sorted, as stored).
fn checked(spec: RoleSpec) -> DomainResult<RoleDefinition> {
    validation::role_name("name", &spec.name)?;
    validation::no_nul("description", &spec.description)?;
    if spec.description.chars().count() > DESCRIPTION_MAX_CHARS {
        return Err(DomainError::invalid(
            "description",
            format!("must be at most {DESCRIPTION_MAX_CHARS} characters"),
        ));
    }
    for (field, values) in [
        ("includes", &spec.includes),
        ("permissions", &spec.permissions),
    ] {
        if values.len() > MAX_PER_ROLE {
            return Err(DomainError::invalid(
                field,
                format!("at most {MAX_PER_ROLE} per role"),
            ));
        }
    }
    for included in &spec.includes {
        validation::role_name("includes", included)?;
        if *included == spec.name {
            return Err(DomainError::invalid(
                "includes",
                "a role cannot include itself",
            ));
        }
    }
    for permission in &spec.permissions {
        validation::permission("permissions", permission)?;
    }
    let sorted = |values: Vec<String>| -> Vec<String> {
        values
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    Ok(RoleDefinition {
        name: spec.name,
        description: spec.description,
        includes: sorted(spec.includes),
        permissions: sorted(spec.permissions),
        ..Default::default()
    })
}

/// Decides a create or update on the graph as the transaction finds it.
fn decide(
    caller: &AdminCaller,
    kind: Kind,
    wanted: RoleDefinition,
    state: &RoleGraphState,
) -> DomainResult<RoleEdit> {
    let existing = state.find(&wanted.name);
    match (kind, existing) {
        (Kind::Create, Some(_)) => {
            return Err(DomainError::AlreadyExists(format!(
                "role {:?} already exists",
                wanted.name
            )))
        }
        (Kind::Update, None) => {
            return Err(DomainError::NotFound(format!(
                "role {:?} does not exist",
                wanted.name
            )))
        }
        _ => {}
    }
    for included in &wanted.includes {
        if state.find(included).is_none() {
            return Err(DomainError::NotFound(format!(
                "role {included:?} does not exist"
            )));
        }
    }
    // What the edit adds: the caller must hold it (what a role already had is
    // not granted by keeping it).
    let (old_includes, old_permissions) = existing
        .map(|r| (r.includes.as_slice(), r.permissions.as_slice()))
        .unwrap_or_default();
    for included in wanted.includes.iter().filter(|r| !old_includes.contains(r)) {
        caller.may_grant_role(included)?;
    }
    for permission in wanted
        .permissions
        .iter()
        .filter(|p| !old_permissions.contains(p))
    {
        caller.may_grant_permission(permission)?;
    }
    // A cycle exists after the edit exactly when an included role reaches this
    // one through the graph as it is (`checked` refused the role itself).
    let catalog = RoleCatalog::from_definitions(&state.roles);
    if let Some(looping) = wanted
        .includes
        .iter()
        .find(|included| catalog.reaches(included, &wanted.name))
    {
        return Err(DomainError::invalid(
            "includes",
            format!(
                "including {looping:?} would make a cycle: {looping:?} already includes {:?}",
                wanted.name
            ),
        ));
    }
    Ok(match kind {
        Kind::Create => RoleEdit::Create(wanted),
        Kind::Update => RoleEdit::Update(wanted),
    })
}

fn decide_delete(name: &str, state: &RoleGraphState) -> DomainResult<RoleEdit> {
    let Some(role) = state.find(name) else {
        return Err(DomainError::NotFound(format!(
            "role {name:?} does not exist"
        )));
    };
    if role.builtin {
        return Err(DomainError::FailedPrecondition(format!(
            "role {name:?} is built in: it can be updated but not deleted"
        )));
    }
    if state.held.contains(name) {
        return Err(DomainError::FailedPrecondition(format!(
            "role {name:?} is held by a user or an API key: revoke it first"
        )));
    }
    if let Some(including) = state
        .roles
        .iter()
        .find(|r| r.includes.iter().any(|i| i == name))
    {
        return Err(DomainError::FailedPrecondition(format!(
            "role {name:?} is included by role {:?}: update that role first",
            including.name
        )));
    }
    Ok(RoleEdit::Delete(name.to_owned()))
}
