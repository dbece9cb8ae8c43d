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
    auth_service_client::AuthServiceClient, CheckRoleRequest, RefreshRequest, ValidateTokenRequest,
};
use tonic::transport::Channel;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

use crate::{
    fixtures::{self, login_request, register_request},
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
