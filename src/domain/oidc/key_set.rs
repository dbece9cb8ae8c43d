//! One provider's signing keys: its JWK Set, fetched from the configured
//! `jwks_uri` or from where the issuer's discovery document says, and cached as
//! long as the answer's `Cache-Control` allows (at least a minute, at most a day;
//! 15 minutes when it says nothing).
//!
//! Fetching is bounded, so garbage tokens cannot make authd hammer a provider: a
//! token naming a `kid` the cached set lacks fetches the set again at most once a
//! minute; after a failed fetch, the next waits 5 seconds. When a fetch fails the
//! keys fetched before stay in use; with none, the caller hears `Unavailable`. Time
//! is the server's [`Clock`](crate::clock::Clock), passed in as `now_ms`.

use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use reqwest::Url;
use tokio::sync::Mutex;

use super::{
    fetch::Fetcher,
    providers::{web_address, ProviderSettings},
};

/// How long a set stays fresh when its answer says nothing.
const DEFAULT_FRESH: Duration = Duration::from_secs(15 * 60);
/// Bounds on what an answer may say: never refetched more than once a minute
/// for freshness, never kept unchecked more than a day.
const MIN_FRESH: Duration = Duration::from_secs(60);
const MAX_FRESH: Duration = Duration::from_secs(24 * 3600);
/// A `kid` the set lacks fetches it again at most this often.
pub(super) const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(60);
/// After a failed fetch, the next waits this long.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// Why no key could be given.
#[derive(Debug)]
pub(super) enum KeyError {
    /// The set could not be fetched and none is cached (the reason, one line).
    Unavailable(String),
    /// The set has no key with the token's `kid`.
    UnknownKey,
}

/// The key cache of one provider.
#[derive(Debug)]
pub(super) struct KeySet {
    issuer: String,
    discovery_uri: Result<Url, String>,
    configured_jwks_uri: Option<Url>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Configured, or discovered (forgotten when a fetch from it fails).
    jwks_uri: Option<Url>,
    keys: Option<Vec<Key>>,
    fresh_until_ms: i64,
    last_fetch_ms: Option<i64>,
    last_failed: bool,
}

#[derive(Debug)]
struct Key {
    kid: Option<String>,
    jwk: Jwk,
}

/// Why a fetch is wanted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Nothing,
    /// Nothing cached yet, or the cached set is past its freshness.
    Fresh,
    /// The token's `kid` is not in the cached set.
    UnknownKid,
}

impl KeySet {
    pub fn new(settings: &ProviderSettings) -> Self {
        KeySet {
            issuer: settings.issuer.clone(),
            discovery_uri: settings.discovery_uri(),
            configured_jwks_uri: settings.jwks_uri.clone(),
            state: Mutex::new(State {
                jwks_uri: settings.jwks_uri.clone(),
                ..State::default()
            }),
        }
    }

    /// The key that should have signed a token with `kid` (a token without one
    /// fits a set of one key only), fetching the set first when the rules above
    /// allow and it is needed.
    pub async fn key_for(
        &self,
        fetcher: &Fetcher,
        kid: Option<&str>,
        now_ms: i64,
    ) -> Result<Jwk, KeyError> {
        let mut state = self.state.lock().await;
        let need = match &state.keys {
            None => Need::Fresh,
            Some(_) if now_ms >= state.fresh_until_ms => Need::Fresh,
            Some(keys) if find(keys, kid).is_none() => Need::UnknownKid,
            Some(_) => Need::Nothing,
        };
        let mut failure = None;
        if need != Need::Nothing && state.may_fetch(need, now_ms) {
            state.last_fetch_ms = Some(now_ms);
            match self.fetch(&mut state, fetcher).await {
                Ok((keys, fresh_for)) => {
                    state.keys = Some(keys);
                    state.fresh_until_ms = now_ms.saturating_add(millis(fresh_for));
                    state.last_failed = false;
                }
                Err(reason) => {
                    tracing::warn!(issuer = %self.issuer, error = %reason, "could not fetch the identity provider's keys");
                    state.last_failed = true;
                    if self.configured_jwks_uri.is_none() {
                        state.jwks_uri = None;
                    }
                    failure = Some(reason);
                }
            }
        }
        match &state.keys {
            Some(keys) => find(keys, kid)
                .map(|key| key.jwk.clone())
                .ok_or(KeyError::UnknownKey),
            None => Err(KeyError::Unavailable(failure.unwrap_or_else(|| {
                "the last fetch failed moments ago; not retried yet".to_owned()
            }))),
        }
    }

    /// Fetches the set (discovering its address first when needed); answers the
    /// usable keys and how long they stay fresh.
    async fn fetch(
        &self,
        state: &mut State,
        fetcher: &Fetcher,
    ) -> Result<(Vec<Key>, Duration), String> {
        let jwks_uri = match &state.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let uri = self.discover(fetcher).await?;
                state.jwks_uri = Some(uri.clone());
                uri
            }
        };
        let fetched = fetcher.get_json(&jwks_uri).await?;
        let keys = usable_keys(&fetched.body).map_err(|e| format!("{jwks_uri}: {e}"))?;
        let fresh_for = fetched
            .max_age
            .unwrap_or(DEFAULT_FRESH)
            .clamp(MIN_FRESH, MAX_FRESH);
        Ok((keys, fresh_for))
    }

    /// The `jwks_uri` of the issuer's discovery document, which must name the
    /// configured issuer exactly (OpenID Connect Discovery 1.0 §4.3).
    async fn discover(&self, fetcher: &Fetcher) -> Result<Url, String> {
        let uri = self.discovery_uri.clone()?;
        let document = fetcher.get_json(&uri).await?.body;
        let issuer = document.get("issuer").and_then(|v| v.as_str());
        if issuer != Some(self.issuer.as_str()) {
            return Err(format!(
                "{uri}: names issuer {issuer:?}, not the configured {:?}",
                self.issuer
            ));
        }
        let jwks_uri = document
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("{uri}: has no jwks_uri"))?;
        web_address("jwks_uri", jwks_uri).map_err(|e| format!("{uri}: {e}"))
    }
}

impl State {
    fn may_fetch(&self, need: Need, now_ms: i64) -> bool {
        let Some(last) = self.last_fetch_ms else {
            return true;
        };
        let wait = match need {
            Need::Nothing => return false,
            Need::Fresh if !self.last_failed => return true,
            Need::Fresh => RETRY_AFTER_FAILURE,
            Need::UnknownKid => UNKNOWN_KID_REFETCH,
        };
        now_ms >= last.saturating_add(millis(wait))
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn find<'a>(keys: &'a [Key], kid: Option<&str>) -> Option<&'a Key> {
    match kid {
        Some(kid) => keys.iter().find(|key| key.kid.as_deref() == Some(kid)),
        None if keys.len() == 1 => keys.first(),
        None => None,
    }
}

/// The signature keys of a JWK Set: public RSA, EC and OKP keys not marked for
/// encryption. Keys this cannot read (an unknown type or curve) are skipped, so one
/// odd key does not hide the others.
fn usable_keys(set: &serde_json::Value) -> Result<Vec<Key>, String> {
    let listed = set
        .get("keys")
        .and_then(|keys| keys.as_array())
        .ok_or("not a JWK Set (no \"keys\" list)")?;
    let keys: Vec<Key> = listed
        .iter()
        .filter_map(|value| serde_json::from_value::<Jwk>(value.clone()).ok())
        .filter(|jwk| !matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)))
        .filter(|jwk| !matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)))
        .map(|jwk| Key {
            kid: jwk.common.key_id.clone(),
            jwk,
        })
        .collect();
    if keys.is_empty() {
        return Err("the JWK Set holds no usable signature key".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_signature_keys_are_used() {
        let set = serde_json::json!({"keys": [
            {"kty": "RSA", "kid": "r", "use": "sig", "alg": "RS256", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
            {"kty": "EC", "kid": "odd", "crv": "P-999", "x": "AA", "y": "AA"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]});
        let keys = usable_keys(&set).expect("keys");
        let kids: Vec<_> = keys.iter().filter_map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, ["r", "ed"]);
        assert!(find(&keys, Some("r")).is_some());
        assert!(find(&keys, Some("secret")).is_none());
        assert!(
            find(&keys, None).is_none(),
            "no kid fits a set of one key only"
        );
        assert!(usable_keys(&serde_json::json!({"keys": []})).is_err());
        assert!(usable_keys(&serde_json::json!([1, 2])).is_err());
    }

    #[test]
    fn fetches_are_spaced_out() {
        let mut state = State::default();
        assert!(state.may_fetch(Need::Fresh, 0), "the first fetch");
        state.last_fetch_ms = Some(1_000);
        assert!(!state.may_fetch(Need::UnknownKid, 60_999));
        assert!(state.may_fetch(Need::UnknownKid, 61_000));
        assert!(
            state.may_fetch(Need::Fresh, 1_001),
            "expiry is bounded by MIN_FRESH"
        );
        state.last_failed = true;
        assert!(!state.may_fetch(Need::Fresh, 5_999));
        assert!(state.may_fetch(Need::Fresh, 6_000));
        assert!(!state.may_fetch(Need::Nothing, 1_000_000));
    }
}
