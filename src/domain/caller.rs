//! Who is calling, as the transport authenticated them: nobody in particular (the
//! AuthService calls that need no credentials), an operator at the shell, or a
//! user whose access token the transport checked once, at its edge.

/// Who acts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// No credentials (Register, Login, Refresh, Logout).
    Anonymous,
    /// The `authd` command line, with direct access to the database.
    Cli,
    /// A user, by id, whose access token was verified for this call.
    User(String),
    /// An API key, by id, verified for this call (AdminService, by permission).
    ApiKey(String),
}

/// Where a call comes from, for the audit trail and the logs.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// The peer's address.
    pub addr: Option<String>,
    /// Who the peer is by its TLS client certificate (mutual TLS): a SPIFFE ID or
    /// the certificate's subject.
    pub identity: Option<String>,
}

/// A caller: who, and from where.
#[derive(Clone, Debug)]
pub struct Caller {
    pub actor: Actor,
    pub peer: Peer,
}

impl Caller {
    pub fn anonymous(peer: Peer) -> Self {
        Caller {
            actor: Actor::Anonymous,
            peer,
        }
    }

    pub fn cli() -> Self {
        Caller {
            actor: Actor::Cli,
            peer: Peer::default(),
        }
    }

    /// The acting user's id, if a user acts.
    pub fn user_id(&self) -> Option<&str> {
        match &self.actor {
            Actor::User(id) => Some(id),
            Actor::Anonymous | Actor::Cli | Actor::ApiKey(_) => None,
        }
    }

    /// The acting user's or API key's id.
    pub fn actor_id(&self) -> Option<&str> {
        match &self.actor {
            Actor::User(id) | Actor::ApiKey(id) => Some(id),
            Actor::Anonymous | Actor::Cli => None,
        }
    }

    /// How the actor is written in the audit trail: a user or key id, `cli`, or
    /// nothing.
    pub fn actor_label(&self) -> Option<&str> {
        match &self.actor {
            Actor::User(id) | Actor::ApiKey(id) => Some(id),
            Actor::Cli => Some("cli"),
            Actor::Anonymous => None,
        }
    }
}

/// A user acting on their own account with an access token the transport checked:
/// only [`Sessions::authorize_user`](super::sessions::Sessions::authorize_user)
/// makes one. API keys never are one.
#[derive(Clone, Debug)]
pub struct UserCaller {
    caller: Caller,
    user_id: String,
    session_id: String,
}

impl UserCaller {
    pub(super) fn new(user_id: String, session_id: String, peer: Peer) -> Self {
        UserCaller {
            caller: Caller {
                actor: Actor::User(user_id.clone()),
                peer,
            },
            user_id,
            session_id,
        }
    }

    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// The session of the token the call came with.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }
}
