//! One `Caller` per kind of RPC the scenarios drive. Each worker owns its callers'
//! state; all workers share the connections, picked round-robin per request.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use authd::grpc::pb::{
    auth_service_client::AuthServiceClient, ChangePasswordRequest, CheckPermissionRequest,
    CheckRoleRequest, CreatePasswordResetTokenRequest, RefreshRequest, ResetPasswordRequest,
    ValidateTokenRequest,
};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

use crate::{
    fixtures::{self, login_request, register_request, with_bearer, Admin},
    load::{outcome, Caller},
};

/// One client per connection, and the counter every worker shares to pick the next.
#[derive(Clone)]
pub struct RoundRobin<C> {
    clients: Vec<C>,
    next: Arc<AtomicUsize>,
}

impl<C: Clone> RoundRobin<C> {
    pub fn new(channels: &[Channel], make: impl Fn(Channel) -> C) -> Self {
        RoundRobin {
            clients: channels.iter().cloned().map(make).collect(),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A client on the next connection, owned so the call's future is `'static`-free
    /// of the worker (cloning a tonic client clones a few `Arc`s).
    fn pick(&self) -> C {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        self.clients[i].clone()
    }
}

pub type Auth = RoundRobin<AuthServiceClient<Channel>>;

pub fn auth_clients(channels: &[Channel]) -> Auth {
    RoundRobin::new(channels, |c| {
        AuthServiceClient::new(c).max_decoding_message_size(authd::grpc::MAX_MESSAGE_BYTES)
    })
}

/// grpc.health.v1 Check of the whole server.
pub struct Health(pub RoundRobin<HealthClient<Channel>>);

impl Caller for Health {
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        let mut client = self.0.pick();
        async move {
            let request = HealthCheckRequest {
                service: String::new(),
            };
            outcome(client.check(request).await).map(|_| ())
        }
    }
}

/// Walks the shared token list from its own offset, so N workers over N tokens each
/// start on a different one.
pub struct Tokens {
    tokens: Arc<[String]>,
    next: usize,
}

impl Tokens {
    pub fn new(tokens: Arc<[String]>, worker: usize) -> Self {
        let next = worker % tokens.len().max(1);
        Tokens { tokens, next }
    }

    fn next(&mut self) -> String {
        let token = self.tokens[self.next].clone();
        self.next = (self.next + 1) % self.tokens.len();
        token
    }
}

pub struct Validate {
    pub clients: Auth,
    pub tokens: Tokens,
}

impl Caller for Validate {
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        let mut client = self.clients.pick();
        let request = ValidateTokenRequest {
            token: self.tokens.next(),
        };
        async move { outcome(client.validate_token(request).await).map(|_| ()) }
    }
}

pub struct CheckRole {
    pub clients: Auth,
    pub tokens: Tokens,
    pub role: String,
}

impl Caller for CheckRole {
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        let mut client = self.clients.pick();
        let request = CheckRoleRequest {
            token: self.tokens.next(),
            role: self.role.clone(),
        };
        async move {
            let answer = outcome(client.check_role(request).await)?;
            // A "no" is a wrong set-up (say, --role admin), not a fast answer.
            if answer.into_inner().allowed {
                Ok(())
            } else {
                Err("NOT_ALLOWED".into())
            }
        }
    }
}

/// Logs in as the users in turn; each call starts a new session.
pub struct Login {
    pub clients: Auth,
    pub users: Arc<[String]>,
    pub next: usize,
}

impl Caller for Login {
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        let mut client = self.clients.pick();
        let request = login_request(&self.users[self.next % self.users.len()]);
        self.next += 1;
        async move { outcome(client.login(request).await).map(|_| ()) }
    }
}

/// Holds one session and spends its refresh token, then the next, in a chain. If a
/// refresh fails the chain is broken, so it logs in again (that login is not timed
/// as a refresh; the failure is counted).
pub struct Refresh {
    pub clients: Auth,
    pub user: String,
    pub refresh_token: String,
}

impl Caller for Refresh {
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        let mut client = self.clients.pick();
        async move {
            let request = RefreshRequest {
                refresh_token: std::mem::take(&mut self.refresh_token),
            };
            match outcome(client.refresh(request).await) {
                Ok(answer) => {
                    let tokens = answer.into_inner().tokens.ok_or("NO_TOKENS")?;
                    self.refresh_token = tokens.refresh_token;
                    Ok(())
                }
                Err(code) => {
                    if let Ok(answer) = client.login(login_request(&self.user)).await {
                        if let Some(tokens) = answer.into_inner().tokens {
                            self.refresh_token = tokens.refresh_token;
                        }
                    }
                    Err(code)
                }
            }
        }
    }
}

/// Registers a new account per call, named by run, worker and count.
pub struct Register {
    pub clients: Auth,
    pub run: String,
    pub worker: usize,
    pub count: u64,
}

impl Caller for Register {
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        let mut client = self.clients.pick();
        let name = fixtures::username(&self.run, "r", self.worker, self.count);
        self.count += 1;
        async move { outcome(client.register(register_request(&name)).await).map(|_| ()) }
    }
}

pub struct CheckPermission {
    pub clients: Auth,
    pub tokens: Tokens,
    pub permission: String,
}

impl Caller for CheckPermission {
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        let mut client = self.clients.pick();
        let request = CheckPermissionRequest {
            token: self.tokens.next(),
            permission: self.permission.clone(),
        };
        async move {
            let answer = outcome(client.check_permission(request).await)?;
            if answer.into_inner().allowed {
                Ok(())
            } else {
                Err("NOT_ALLOWED".into())
            }
        }
    }
}

/// The second password the lifecycle scenarios switch to and back from.
pub const OTHER_PASSWORD: &str = "bench password, the other one";

/// Changes its own user's password to the other one, and back on the next call.
/// The password flips only when a change succeeds.
pub struct ChangePassword {
    pub clients: Auth,
    pub access_token: String,
    pub changed: bool,
}

impl Caller for ChangePassword {
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        let mut client = self.clients.pick();
        let (current, new) = if self.changed {
            (OTHER_PASSWORD, fixtures::PASSWORD)
        } else {
            (fixtures::PASSWORD, OTHER_PASSWORD)
        };
        let request = with_bearer(
            ChangePasswordRequest {
                current_password: current.to_owned(),
                new_password: new.to_owned(),
            },
            &self.access_token,
        );
        async move {
            outcome(client.change_password(request?).await)?;
            self.changed = !self.changed;
            Ok(())
        }
    }
}

/// Asks for a reset token for `user_id` as the admin.
fn fetch_reset_token(
    mut admin: Admin,
    admin_token: String,
    user_id: String,
) -> JoinHandle<Result<String, String>> {
    tokio::spawn(async move {
        let request = with_bearer(CreatePasswordResetTokenRequest { user_id }, &admin_token)?;
        Ok(outcome(admin.create_password_reset_token(request).await)?
            .into_inner()
            .reset_token)
    })
}

/// Spends reset tokens of two users in turn: while one user's token is spent, the
/// other's is fetched (a newer token voids older ones, so one user's next token
/// must not be asked for while its current one is in flight).
pub struct ResetPassword {
    pub clients: Auth,
    pub admin: Admin,
    pub admin_token: String,
    pub user_ids: [String; 2],
    pub turn: usize,
    pub next: Option<JoinHandle<Result<String, String>>>,
}

impl Caller for ResetPassword {
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        let mut client = self.clients.pick();
        let fetching = self.next.take().unwrap_or_else(|| {
            fetch_reset_token(
                self.admin.clone(),
                self.admin_token.clone(),
                self.user_ids[self.turn].clone(),
            )
        });
        self.turn = 1 - self.turn;
        self.next = Some(fetch_reset_token(
            self.admin.clone(),
            self.admin_token.clone(),
            self.user_ids[self.turn].clone(),
        ));
        async move {
            let reset_token = fetching.await.map_err(|_| "FETCH_PANICKED".to_owned())??;
            let request = ResetPasswordRequest {
                reset_token,
                new_password: OTHER_PASSWORD.to_owned(),
            };
            outcome(client.reset_password(request).await).map(|_| ())
        }
    }
}
