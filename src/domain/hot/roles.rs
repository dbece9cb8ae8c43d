//! The role graph as the hot path uses it: every role's transitive closure (the
//! roles it includes, through any path, and all their permissions), computed once
//! per change of the graph, so that a holder's effective [`Grants`] are ready in
//! the views and a check on the hot path is a lookup.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use crate::{
    domain::error::{DomainError, DomainResult},
    store::RoleDefinition,
};

/// A list of role names, shared between the views and the answers built from them.
pub type RoleList = Arc<[Arc<str>]>;
/// A sorted list of permissions without repeats.
pub type PermissionList = Arc<[Arc<str>]>;

/// The role that must always keep an active holder, and that holds every
/// permission, those no role names yet included.
pub const ADMIN_ROLE: &str = "admin";

/// What a holder of some roles holds, through the graph.
#[derive(Clone, Debug, Default)]
pub struct Grants {
    /// Effective roles, lowest rank first, no repeats.
    pub roles: RoleList,
    /// Effective permissions, sorted.
    pub permissions: PermissionList,
    /// Holds `admin`: every permission, named by a role or not.
    every_permission: bool,
}

impl Grants {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r.as_ref() == role)
    }

    /// Holds `admin` (directly or through another role): every permission, and the
    /// right to grant any role.
    pub fn holds_everything(&self) -> bool {
        self.every_permission
    }

    pub fn has_permission(&self, permission: &str) -> bool {
        self.every_permission
            || self
                .permissions
                .binary_search_by(|p| p.as_ref().cmp(permission))
                .is_ok()
    }
}

#[cfg(test)]
impl Grants {
    /// Grants holding exactly these, as listed, without `admin`'s every permission.
    pub fn listing(roles: &[&str], permissions: &[&str]) -> Grants {
        Grants {
            roles: roles.iter().map(|r| Arc::from(*r)).collect(),
            permissions: permissions.iter().map(|p| Arc::from(*p)).collect(),
            every_permission: false,
        }
    }
}

/// One role's closure.
#[derive(Debug)]
struct Closure {
    rank: i32,
    /// The role and every role it reaches, by name.
    roles: Vec<Arc<str>>,
    /// Every permission of those roles.
    permissions: BTreeSet<Arc<str>>,
}

#[derive(Debug, Default)]
pub struct RoleCatalog {
    roles: HashMap<String, Closure>,
    /// Every permission some role names: what `admin`'s holders are shown.
    all_permissions: PermissionList,
}

impl RoleCatalog {
    pub fn from_definitions(definitions: &[RoleDefinition]) -> Self {
        let by_name: HashMap<&str, &RoleDefinition> =
            definitions.iter().map(|r| (r.name.as_str(), r)).collect();
        let mut roles = HashMap::with_capacity(definitions.len());
        for definition in definitions {
            let mut seen: BTreeSet<&str> = BTreeSet::new();
            let mut stack = vec![definition.name.as_str()];
            let mut permissions = BTreeSet::new();
            // Each role is visited once, so a cycle in the data cannot hang us.
            while let Some(name) = stack.pop() {
                let Some(role) = by_name.get(name) else {
                    continue;
                };
                if !seen.insert(name) {
                    continue;
                }
                permissions.extend(role.permissions.iter().map(|p| Arc::from(p.as_str())));
                stack.extend(role.includes.iter().map(String::as_str));
            }
            let mut reached: Vec<&RoleDefinition> = seen.iter().map(|n| by_name[n]).collect();
            reached.sort_by(|a, b| a.rank.cmp(&b.rank).then_with(|| a.name.cmp(&b.name)));
            roles.insert(
                definition.name.clone(),
                Closure {
                    rank: definition.rank,
                    roles: reached.iter().map(|r| Arc::from(r.name.as_str())).collect(),
                    permissions,
                },
            );
        }
        let all_permissions: BTreeSet<Arc<str>> = definitions
            .iter()
            .flat_map(|r| r.permissions.iter().map(|p| Arc::from(p.as_str())))
            .collect();
        RoleCatalog {
            roles,
            all_permissions: all_permissions.into_iter().collect(),
        }
    }

    pub fn exists(&self, name: &str) -> bool {
        self.roles.contains_key(name)
    }

    /// `NOT_FOUND` for a role name that does not exist (and `INVALID_ARGUMENT` naming
    /// `field` for an empty one).
    pub fn require(&self, field: &'static str, name: &str) -> DomainResult<()> {
        if name.is_empty() {
            return Err(DomainError::invalid(field, "must not be empty"));
        }
        self.known(name)
    }

    /// `NOT_FOUND` for the first of `names` that does not exist.
    pub fn require_all<S: AsRef<str>>(&self, names: &[S]) -> DomainResult<()> {
        names.iter().try_for_each(|name| self.known(name.as_ref()))
    }

    fn known(&self, name: &str) -> DomainResult<()> {
        if !self.exists(name) {
            return Err(DomainError::NotFound(format!(
                "role {name:?} does not exist"
            )));
        }
        Ok(())
    }

    /// Whether `from` reaches `to` through the graph (a role reaches itself).
    pub fn reaches(&self, from: &str, to: &str) -> bool {
        self.roles
            .get(from)
            .is_some_and(|closure| closure.roles.iter().any(|r| r.as_ref() == to))
    }

    /// The roles whose holders hold `role` (itself among them), for filtering by
    /// effective role.
    pub fn holders_of(&self, role: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .roles
            .iter()
            .filter(|(_, closure)| closure.roles.iter().any(|r| r.as_ref() == role))
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    /// What holding `direct` grants: those roles, everything they reach, and all
    /// their permissions. Names the catalog does not know are ignored.
    pub fn grants<S: AsRef<str>>(&self, direct: &[S]) -> Grants {
        let mut roles: Vec<(i32, Arc<str>)> = Vec::new();
        let mut permissions: BTreeSet<Arc<str>> = BTreeSet::new();
        for name in direct {
            let Some(closure) = self.roles.get(name.as_ref()) else {
                continue;
            };
            permissions.extend(closure.permissions.iter().cloned());
            for role in &closure.roles {
                if !roles.iter().any(|(_, r)| r == role) {
                    let rank = self.roles.get(role.as_ref()).map_or(0, |c| c.rank);
                    roles.push((rank, role.clone()));
                }
            }
        }
        roles.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        let every_permission = roles.iter().any(|(_, r)| r.as_ref() == ADMIN_ROLE);
        Grants {
            roles: roles.into_iter().map(|(_, r)| r).collect(),
            permissions: if every_permission {
                self.all_permissions.clone()
            } else {
                permissions.into_iter().collect()
            },
            every_permission,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(name: &str, includes: &[&str], permissions: &[&str], rank: i32) -> RoleDefinition {
        RoleDefinition {
            name: name.into(),
            includes: includes.iter().map(|s| (*s).into()).collect(),
            permissions: permissions.iter().map(|s| (*s).into()).collect(),
            rank,
            ..Default::default()
        }
    }

    fn defaults() -> Vec<RoleDefinition> {
        vec![
            role("viewer", &[], &[], 0),
            role("user", &["viewer"], &[], 1),
            role("editor", &["user"], &[], 2),
            role("moderator", &["editor"], &[], 3),
            role("admin", &["moderator"], &["authd.users.read"], 4),
        ]
    }

    fn names(list: &RoleList) -> Vec<&str> {
        list.iter().map(|r| r.as_ref()).collect()
    }

    #[test]
    fn a_role_includes_every_role_below_it() {
        let catalog = RoleCatalog::from_definitions(&defaults());
        assert_eq!(
            names(&catalog.grants(&["editor"]).roles),
            ["viewer", "user", "editor"]
        );
        assert_eq!(names(&catalog.grants(&["admin"]).roles).len(), 5);
        assert_eq!(
            names(&catalog.grants(&["user", "viewer"]).roles),
            ["viewer", "user"]
        );
        assert!(catalog.grants::<&str>(&[]).roles.is_empty());
        assert!(catalog.grants(&["ghost"]).roles.is_empty());
    }

    #[test]
    fn a_diamond_grants_the_shared_role_and_permissions_once() {
        let mut roles = defaults();
        roles.push(role("base", &[], &["read", "list"], 5));
        roles.push(role("left", &["base"], &["left.write"], 6));
        roles.push(role("right", &["base"], &["right.write"], 7));
        roles.push(role("top", &["left", "right"], &["read"], 8));
        let catalog = RoleCatalog::from_definitions(&roles);
        let top = catalog.grants(&["top"]);
        assert_eq!(names(&top.roles), ["base", "left", "right", "top"]);
        assert_eq!(
            names(&top.permissions),
            ["left.write", "list", "read", "right.write"]
        );
        assert!(top.has_permission("left.write"));
        assert!(!top.has_permission("authd.users.read"));
        assert!(catalog.reaches("top", "base"));
        assert!(!catalog.reaches("base", "top"));
        assert_eq!(catalog.holders_of("base"), ["base", "left", "right", "top"]);
    }

    #[test]
    fn admin_holds_every_permission() {
        let mut roles = defaults();
        roles.push(role("billing", &[], &["billing.refund"], 5));
        let catalog = RoleCatalog::from_definitions(&roles);
        let admin = catalog.grants(&["admin"]);
        assert!(admin.has_permission("billing.refund"));
        assert!(admin.has_permission("named.by.no.role"));
        assert_eq!(
            names(&admin.permissions),
            ["authd.users.read", "billing.refund"]
        );
        // Through a role that includes admin, too.
        roles.push(role("owner", &["admin"], &[], 6));
        let catalog = RoleCatalog::from_definitions(&roles);
        assert!(catalog.grants(&["owner"]).has_permission("anything"));
        assert!(!catalog.grants(&["billing"]).has_permission("anything"));
    }

    #[test]
    fn a_cycle_in_the_data_does_not_hang() {
        let roles = vec![role("a", &["b"], &["x"], 0), role("b", &["a"], &["y"], 1)];
        let catalog = RoleCatalog::from_definitions(&roles);
        let a = catalog.grants(&["a"]);
        assert_eq!(names(&a.roles), ["a", "b"]);
        assert_eq!(names(&a.permissions), ["x", "y"]);
    }
}
