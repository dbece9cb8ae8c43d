//! [`Verifier`]: decides whether a bearer credential is good, locally when it can be
//! sure and by asking authd (`ValidateToken`) when it cannot, and caches the
//! decision. The revocation stream (`stream.rs`) keeps the local answer fresh.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tonic::{transport::Channel, Code};

use crate::{
    cache::{Decision, Decisions, Verdict},
    error::{ConnectError, Refusal},
    identity::{Credential, Decided, Identity},
    keys::{KeySet, TokenRules, Unverified, Verified},
    pb::{auth_service_client::AuthServiceClient, ValidateTokenRequest},
    revocations::{Facts, Judgement, Revocations, AMBIGUITY_MS},
    state::{now_ms, Inner, StreamHealth},
};

/// Anything longer is refused before parsing (authd's own bound).
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// authd's API keys begin with this.
const KEY_SCHEME: &str = "authd_";

/// Checks authd credentials in this process. Cheap to clone; clones share the
/// cache and the stream. The stream stops when the last clone is dropped.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

/// How a [`Verifier`] is set up; [`Verifier::builder`] starts one.
pub struct VerifierBuilder {
    authd: String,
    channel: Option<Channel>,
    jwks_url: Option<String>,
    issuer: String,
    audience: String,
    max_stream_outage: Duration,
    max_token_lifetime: Duration,
    cache_capacity: usize,
    jwks_refresh: Duration,
}

impl Verifier {
    /// A verifier of the authd at `authd` (its gRPC address, e.g.
    /// `http://127.0.0.1:50051`).
    pub fn builder(authd: impl Into<String>) -> VerifierBuilder {
        VerifierBuilder {
            authd: authd.into(),
            channel: None,
            jwks_url: None,
            issuer: "authd".into(),
            audience: "authd".into(),
            max_stream_outage: Duration::from_secs(2),
            max_token_lifetime: Duration::from_secs(3600),
            cache_capacity: 100_000,
            jwks_refresh: Duration::from_secs(300),
        }
    }

    /// Whether decisions can be made locally now: the revocation stream is
    /// followed (or has been down for less than the outage bound).
    pub fn is_following(&self) -> bool {
        self.inner
            .health
            .trusted(now_ms(), self.inner.max_stream_outage_ms)
    }

    /// Accepts or refuses a bearer credential (an access token or an API key).
    pub async fn verify(&self, token: &str) -> Result<Arc<Identity>, Refusal> {
        let inner = &*self.inner;
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::Invalid);
        }
        let now = now_ms();
        let trusted = inner.health.trusted(now, inner.max_stream_outage_ms);
        if trusted {
            if let Some(decision) = inner.decisions.get(token) {
                let keys = inner.keys.load();
                match decision.verdict(now, &inner.revocations, |kid| keys.contains(kid)) {
                    Verdict::Accept(identity) => return Ok(identity),
                    Verdict::Refuse => return Err(Refusal::Invalid),
                    Verdict::AskAuthd => return self.ask_authd(token, trusted).await,
                }
            }
        }
        if token.starts_with(KEY_SCHEME) {
            return self.ask_authd(token, trusted).await;
        }
        let verified = match inner.rules.verify(&inner.keys.load(), token, now) {
            Ok(verified) => verified,
            Err(Unverified::Invalid) => return Err(Refusal::Invalid),
            Err(Unverified::UnknownKid(_)) => {
                // A key rotated in a moment ago: fetch the set again, at most once a
                // second, then let authd decide what is still unknown.
                self.refetch_keys(Duration::from_secs(1)).await;
                match inner.rules.verify(&inner.keys.load(), token, now) {
                    Ok(verified) => verified,
                    Err(Unverified::Invalid) => return Err(Refusal::Invalid),
                    Err(Unverified::UnknownKid(_)) => return self.ask_authd(token, trusted).await,
                }
            }
        };
        let issued_ms = verified.claims.iat.saturating_mul(1000);
        let lifetime_ms =
            (verified.claims.exp.saturating_sub(verified.claims.iat)).saturating_mul(1000);
        let covered = issued_ms
            >= inner
                .health
                .covers_from_ms
                .load(Ordering::Acquire)
                .saturating_add(AMBIGUITY_MS);
        if !trusted || !covered || lifetime_ms > inner.max_token_lifetime_ms {
            return self.ask_authd(token, trusted).await;
        }
        match self.decide_locally(token, verified) {
            Local::Accept(identity) => Ok(identity),
            Local::Refuse => Err(Refusal::Invalid),
            Local::AskAuthd => self.ask_authd(token, trusted).await,
        }
    }

    /// As [`Verifier::verify`], with the caller's effective permissions known
    /// ([`Identity::permissions`] is `Some`). A token carries roles but no
    /// permissions, so the first such check of a token asks authd
    /// (`ValidateToken`); its answer is cached with the decision, so later checks
    /// cost a hash lookup again, until the revocation stream says something that
    /// can change it (a held role's definition, the user's roles) or stops being
    /// followed.
    pub async fn verify_with_permissions(&self, token: &str) -> Result<Arc<Identity>, Refusal> {
        let identity = self.verify(token).await?;
        if identity.permissions.is_some() {
            return Ok(identity);
        }
        let inner = &*self.inner;
        let trusted = inner.health.trusted(now_ms(), inner.max_stream_outage_ms);
        self.ask_authd(token, trusted).await
    }

    /// Decides a token that verified here, and caches the decision.
    fn decide_locally(&self, token: &str, verified: Verified) -> Local {
        let inner = &*self.inner;
        let Verified { kid, claims } = verified;
        let identity = Arc::new(Identity {
            subject: claims.sub.clone(),
            username: None,
            roles: claims.roles.clone(),
            permissions: None,
            session_id: Some(claims.sid.clone()),
            expires_at: Some(claims.exp),
            credential: Credential::AccessToken,
            decided: Decided::Locally,
        });
        let facts = Facts {
            subject: claims.sub,
            session_id: Some(claims.sid),
            roles: claims.roles,
            as_of_ms: claims.iat.saturating_mul(1000),
        };
        let epoch = inner.revocations.epoch();
        let decision = Decision::accepted(identity.clone(), facts, Some(kid), epoch);
        match decision.judge_now(&inner.revocations) {
            Judgement::Stands => {
                inner.decisions.put(token, decision);
                Local::Accept(identity)
            }
            Judgement::Refused => {
                decision.refuse();
                inner.decisions.put(token, decision);
                Local::Refuse
            }
            Judgement::AskAuthd => Local::AskAuthd,
        }
    }

    /// authd's answer, cached when the stream will keep it fresh.
    async fn ask_authd(&self, token: &str, trusted: bool) -> Result<Arc<Identity>, Refusal> {
        let inner = &*self.inner;
        let asked_at = now_ms();
        // Read before asking: an event applied while authd answers moves it, so the
        // answer, which may predate that event, is judged again at the next check.
        let epoch = inner.revocations.epoch();
        let answer = inner
            .authd
            .clone()
            .validate_token(ValidateTokenRequest {
                token: token.to_owned(),
            })
            .await;
        let response = match answer {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == Code::Unauthenticated => {
                if trusted {
                    let facts = Facts {
                        subject: String::new(),
                        session_id: None,
                        roles: Vec::new(),
                        as_of_ms: asked_at,
                    };
                    let refused = Arc::new(refused_identity());
                    inner
                        .decisions
                        .put(token, Decision::refused(refused, facts));
                }
                return Err(Refusal::Invalid);
            }
            Err(status) => return Err(Refusal::Unavailable(status.message().to_owned())),
        };
        let is_key = response.session_id.is_empty();
        let expires_at = response.expires_at.map(|t| t.seconds);
        let issued_at = response.issued_at.map(|t| t.seconds);
        let identity = Arc::new(Identity {
            subject: response.user_id.clone(),
            username: Some(response.username),
            roles: response.roles.clone(),
            permissions: Some(response.permissions),
            session_id: (!is_key).then(|| response.session_id.clone()),
            expires_at,
            credential: if is_key {
                Credential::ApiKey
            } else {
                Credential::AccessToken
            },
            decided: Decided::ByAuthd,
        });
        // Cached only while the stream will tell what happens to it from now on,
        // and for tokens no longer-lived than what the revocation memory covers.
        let short_lived = match (issued_at, expires_at) {
            (Some(iat), Some(exp)) => {
                exp.saturating_sub(iat).saturating_mul(1000) <= inner.max_token_lifetime_ms
            }
            _ => is_key && expires_at.is_none(),
        };
        let still_trusted = inner.health.trusted(now_ms(), inner.max_stream_outage_ms);
        if trusted && still_trusted && (short_lived || is_key) {
            let facts = Facts {
                subject: response.user_id,
                session_id: (!is_key).then_some(response.session_id),
                roles: response.roles,
                // authd's other replicas may learn of a change up to 2 s late.
                as_of_ms: asked_at - AMBIGUITY_MS,
            };
            inner.decisions.put(
                token,
                Decision::accepted(identity.clone(), facts, None, epoch),
            );
        } else {
            inner.decisions.remove(token);
        }
        Ok(identity)
    }

    /// Fetches the JWK Set again unless it was fetched within `min_interval`.
    async fn refetch_keys(&self, min_interval: Duration) {
        self.inner.refetch_keys(min_interval).await;
    }
}

/// A local decision.
enum Local {
    Accept(Arc<Identity>),
    Refuse,
    AskAuthd,
}

fn refused_identity() -> Identity {
    Identity {
        subject: String::new(),
        username: None,
        roles: Vec::new(),
        permissions: None,
        session_id: None,
        expires_at: None,
        credential: Credential::AccessToken,
        decided: Decided::ByAuthd,
    }
}

impl VerifierBuilder {
    /// Where authd's HTTP listener serves the JWK Set
    /// (`http://HOST:9090/.well-known/jwks.json`). Unset: `GetJwks` over gRPC.
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = Some(url.into());
        self
    }

    /// A channel of your own to authd (TLS, timeouts, a load balancer); by default
    /// one is opened to the address given to [`Verifier::builder`].
    pub fn channel(mut self, channel: Channel) -> Self {
        self.channel = Some(channel);
        self
    }

    /// `iss` and `aud` that tokens must carry (authd's `AUTHD_ISSUER` and
    /// `AUTHD_AUDIENCE`; both `authd` by default).
    pub fn issuer_and_audience(mut self, issuer: &str, audience: &str) -> Self {
        self.issuer = issuer.into();
        self.audience = audience.into();
        self
    }

    /// How long decisions stay local after the revocation stream is lost (2 s by
    /// default); past it every credential is checked with authd until the stream
    /// is back.
    pub fn max_stream_outage(mut self, outage: Duration) -> Self {
        self.max_stream_outage = outage;
        self
    }

    /// Tokens that live longer than this (1 h by default) are always checked with
    /// authd; revocations are remembered this long.
    pub fn max_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.max_token_lifetime = lifetime;
        self
    }

    /// Decisions kept (100,000 by default).
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// How often the JWK Set is fetched again (5 min by default; also on an unknown
    /// kid and on every key change the stream announces).
    pub fn jwks_refresh(mut self, every: Duration) -> Self {
        self.jwks_refresh = every;
        self
    }

    /// Fetches the JWK Set and starts following the revocation stream (in a task
    /// on the current Tokio runtime). Until the stream's snapshot has arrived,
    /// every credential is checked with authd.
    pub async fn connect(self) -> Result<Verifier, ConnectError> {
        let channel = match self.channel {
            Some(channel) => channel,
            None => Channel::from_shared(self.authd.clone())
                .map_err(|_| ConnectError::BadAddress(self.authd.clone()))?
                .connect_lazy(),
        };
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let inner = Arc::new(Inner {
            authd: AuthServiceClient::new(channel),
            jwks_url: self.jwks_url,
            http: reqwest::Client::new(),
            rules: TokenRules::new(&self.issuer, &self.audience),
            keys: ArcSwap::from_pointee(KeySet::default()),
            refetching: Mutex::new(i64::MIN),
            revocations: Revocations::default(),
            decisions: Decisions::new(self.cache_capacity),
            health: StreamHealth::new(),
            max_stream_outage_ms: millis(self.max_stream_outage),
            max_token_lifetime_ms: millis(self.max_token_lifetime),
            jwks_refresh: self.jwks_refresh,
            stop: CancellationToken::new(),
        });
        let keys = inner.fetch_keys().await.map_err(ConnectError::Jwks)?;
        inner.keys.store(Arc::new(keys));
        *inner.refetching.lock().await = now_ms();
        tokio::spawn(crate::stream::follow(
            Arc::downgrade(&inner),
            inner.stop.clone(),
        ));
        Ok(Verifier { inner })
    }
}
