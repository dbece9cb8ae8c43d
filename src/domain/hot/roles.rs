//! The role hierarchy, loaded from the `roles` table: each role includes the role
//! named in its `includes`, transitively. Effective roles are computed here, once
//! per change, so the hot path only reads a ready list.

use std::{collections::HashMap, sync::Arc};

use crate::{
    domain::error::{DomainError, DomainResult},
    store::entities::role,
};

/// A list of role names, shared between the views and the answers built from them.
pub type RoleList = Arc<[Arc<str>]>;

#[derive(Debug, Default)]
pub struct RoleCatalog {
    /// name → (rank, the role and every role below it, lowest first).
    roles: HashMap<String, (i32, RoleList)>,
}

impl RoleCatalog {
    pub fn from_rows(rows: &[role::Model]) -> Self {
        let by_name: HashMap<&str, &role::Model> =
            rows.iter().map(|r| (r.name.as_str(), r)).collect();
        let mut roles = HashMap::new();
        for row in rows {
            let mut chain: Vec<&role::Model> = vec![row];
            let mut next = row.includes.as_deref();
            // Bounded by the number of roles, so a cycle in the data cannot hang us.
            while let Some(name) = next {
                match by_name.get(name) {
                    Some(r)
                        if chain.len() <= rows.len() && !chain.iter().any(|c| c.name == r.name) =>
                    {
                        chain.push(r);
                        next = r.includes.as_deref();
                    }
                    _ => break,
                }
            }
            chain.sort_by_key(|r| r.rank);
            let names: RoleList = chain.iter().map(|r| Arc::from(r.name.as_str())).collect();
            roles.insert(row.name.clone(), (row.rank, names));
        }
        RoleCatalog { roles }
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

    /// Direct roles plus everything below them, lowest rank first, no repeats.
    /// Names the catalog does not know are ignored.
    pub fn effective<S: AsRef<str>>(&self, direct: &[S]) -> RoleList {
        let mut all: Vec<(i32, Arc<str>)> = Vec::new();
        for name in direct {
            if let Some((_, closure)) = self.roles.get(name.as_ref()) {
                for role in closure.iter() {
                    if !all.iter().any(|(_, r)| r == role) {
                        let rank = self.roles.get(role.as_ref()).map_or(0, |(rank, _)| *rank);
                        all.push((rank, role.clone()));
                    }
                }
            }
        }
        all.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        all.into_iter().map(|(_, r)| r).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> RoleCatalog {
        let names = ["viewer", "user", "editor", "moderator", "admin"];
        let rows: Vec<role::Model> = names
            .iter()
            .enumerate()
            .map(|(i, n)| role::Model {
                name: (*n).into(),
                includes: i.checked_sub(1).map(|j| names[j].into()),
                rank: i as i32,
            })
            .collect();
        RoleCatalog::from_rows(&rows)
    }

    fn names(list: &RoleList) -> Vec<&str> {
        list.iter().map(|r| r.as_ref()).collect()
    }

    #[test]
    fn a_role_includes_every_role_below_it() {
        let catalog = defaults();
        assert_eq!(
            names(&catalog.effective(&["editor"])),
            ["viewer", "user", "editor"]
        );
        assert_eq!(names(&catalog.effective(&["admin"])).len(), 5);
        assert_eq!(
            names(&catalog.effective(&["user", "viewer"])),
            ["viewer", "user"]
        );
        assert!(catalog.effective::<&str>(&[]).is_empty());
        assert!(catalog.effective(&["ghost"]).is_empty());
    }

    #[test]
    fn a_cycle_in_the_data_does_not_hang() {
        let rows = vec![
            role::Model {
                name: "a".into(),
                includes: Some("b".into()),
                rank: 0,
            },
            role::Model {
                name: "b".into(),
                includes: Some("a".into()),
                rank: 1,
            },
        ];
        let catalog = RoleCatalog::from_rows(&rows);
        assert_eq!(names(&catalog.effective(&["a"])), ["a", "b"]);
    }
}
