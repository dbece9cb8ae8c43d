//! What a route behind a proxy asks of its caller beyond valid credentials: a role,
//! a permission, or both (Envoy's ext_authz context extensions `authd_role` and
//! `authd_permission`). Checked against what the holder holds now, never against
//! what their token says.

use super::principal::Principal;
use crate::domain::error::{DomainError, DomainResult};

/// A route's requirements; `None` asks for nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Requirements<'a> {
    pub role: Option<&'a str>,
    pub permission: Option<&'a str>,
}

impl Requirements<'_> {
    /// `PERMISSION_DENIED` naming the first requirement `principal` does not meet.
    /// A requirement that names nothing (an empty value) is met by nobody: a
    /// misconfigured route fails closed.
    pub(super) fn check(&self, principal: &Principal) -> DomainResult<()> {
        if let Some(role) = self.role {
            if role.is_empty() || !principal.has_role(role) {
                return Err(DomainError::PermissionDenied(format!(
                    "this route needs the role {role:?}"
                )));
            }
        }
        if let Some(permission) = self.permission {
            if permission.is_empty() || !principal.has_permission(permission) {
                return Err(DomainError::PermissionDenied(format!(
                    "this route needs the permission {permission:?}"
                )));
            }
        }
        Ok(())
    }
}
