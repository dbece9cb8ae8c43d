//! Who a verified token speaks for, as handlers behind [`crate::AuthLayer`] read it
//! from the request's extensions (`Arc<Identity>`).

/// The role whose holders hold every permission, those no role names included
/// (authd's rule, mirrored here so an admin passes any permission requirement).
pub(crate) const ADMIN_ROLE: &str = "admin";

/// What kind of credential the caller presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    AccessToken,
    ApiKey,
}

/// Who decided: this process from the token and the revocation stream, or authd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decided {
    Locally,
    ByAuthd,
}

/// The caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user's id (`sub`), or the API key's id.
    pub subject: String,
    /// The username or the key's name, when authd answered (tokens carry no name).
    pub username: Option<String>,
    /// Effective roles: the hierarchy applied.
    pub roles: Vec<String>,
    /// Effective permissions, when authd answered for the credential
    /// (`ValidateToken`); `None` when it was decided locally, since an access token
    /// carries roles but no permissions. [`crate::Verifier::verify_with_permissions`]
    /// (and [`crate::AuthLayer::require_permission`]) make sure they are known.
    pub permissions: Option<Vec<String>>,
    /// The session of an access token; `None` for an API key.
    pub session_id: Option<String>,
    /// When the credential expires (Unix seconds); `None` for a key without expiry.
    pub expires_at: Option<i64>,
    pub credential: Credential,
    pub decided: Decided,
}

impl Identity {
    /// Whether the caller holds `role` (directly or through the hierarchy).
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|held| held == role)
    }

    /// Whether the caller holds `permission`: a holder of `admin` holds every one;
    /// anyone else only those authd named. Unknown permissions (`None`) hold none.
    pub fn has_permission(&self, permission: &str) -> bool {
        self.has_role(ADMIN_ROLE)
            || self
                .permissions
                .as_ref()
                .is_some_and(|held| held.iter().any(|p| p == permission))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(roles: &[&str], permissions: Option<&[&str]>) -> Identity {
        Identity {
            subject: "u".into(),
            username: None,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            permissions: permissions.map(|p| p.iter().map(|p| (*p).to_owned()).collect()),
            session_id: None,
            expires_at: None,
            credential: Credential::AccessToken,
            decided: Decided::ByAuthd,
        }
    }

    #[test]
    fn only_named_permissions_count_and_an_admin_holds_all() {
        let billing = caller(&["user", "billing"], Some(&["billing.refund"]));
        assert!(billing.has_permission("billing.refund"));
        assert!(!billing.has_permission("billing.void"));
        assert!(
            !caller(&["user"], None).has_permission("billing.refund"),
            "unknown"
        );
        assert!(caller(&["user", "admin"], None).has_permission("named.by.no.role"));
    }
}
