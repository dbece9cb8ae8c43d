//! Who a verified token speaks for, as handlers behind [`crate::AuthLayer`] read it
//! from the request's extensions (`Arc<Identity>`).

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
}
