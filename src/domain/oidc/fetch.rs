//! Fetching a provider's JSON documents (its discovery document and JWK Set) with
//! a well-kept HTTP client: reqwest over rustls (the webpki roots), short
//! timeouts, no redirects, a size cap, and how long the answer stays fresh from
//! its `Cache-Control` (and `Age`) headers. Errors are one line for logs and
//! audit rows; they hold no token.

use std::time::Duration;

use reqwest::{header::HeaderMap, Url};

/// How long connecting may take, and the whole exchange.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const TIMEOUT: Duration = Duration::from_secs(5);
/// Discovery documents and JWK Sets are a few KiB; anything far larger is refused.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// A document as fetched.
#[derive(Debug)]
pub(super) struct Fetched {
    pub body: serde_json::Value,
    /// How long it stays fresh, when the response says (`no-store` and
    /// `no-cache` say zero).
    pub max_age: Option<Duration>,
}

/// The HTTP client of every provider, built once.
#[derive(Clone, Debug)]
pub(super) struct Fetcher {
    client: reqwest::Client,
}

impl Fetcher {
    pub fn new() -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("authd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                anyhow::anyhow!("cannot build the HTTP client for identity providers: {e}")
            })?;
        Ok(Fetcher { client })
    }

    /// GETs `url` and parses its body as JSON.
    pub async fn get_json(&self, url: &Url) -> Result<Fetched, String> {
        let mut response = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", one_line(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        let max_age = freshness(response.headers());
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("GET {url}: {}", one_line(&e)))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(format!("GET {url}: the answer is larger than 256 KiB"));
            }
            body.extend_from_slice(&chunk);
        }
        let body = serde_json::from_slice(&body)
            .map_err(|e| format!("GET {url}: the answer is not JSON: {e}"))?;
        Ok(Fetched { body, max_age })
    }
}

/// An error and its causes on one line (reqwest's own message leaves them out).
fn one_line(err: &reqwest::Error) -> String {
    let mut line = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// The freshness lifetime `Cache-Control` gives, less the `Age` the answer has
/// already spent in caches (RFC 9111 §4.2).
fn freshness(headers: &HeaderMap) -> Option<Duration> {
    let mut max_age = None;
    for value in headers.get_all(reqwest::header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let directive = directive.trim().to_ascii_lowercase();
            if directive == "no-store" || directive == "no-cache" {
                return Some(Duration::ZERO);
            }
            if let Some(seconds) = directive.strip_prefix("max-age=") {
                if let Ok(seconds) = seconds.trim_matches('"').parse::<u64>() {
                    max_age = Some(Duration::from_secs(seconds));
                }
            }
        }
    }
    let age = headers
        .get(reqwest::header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs);
    max_age.map(|max_age| max_age.saturating_sub(age))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderValue, AGE, CACHE_CONTROL};

    fn headers(pairs: &[(reqwest::header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    #[test]
    fn cache_control_gives_the_freshness() {
        let google = headers(&[(
            CACHE_CONTROL,
            "public, max-age=19917, must-revalidate, no-transform",
        )]);
        assert_eq!(freshness(&google), Some(Duration::from_secs(19917)));
        let aged = headers(&[(CACHE_CONTROL, "max-age=600"), (AGE, "100")]);
        assert_eq!(freshness(&aged), Some(Duration::from_secs(500)));
        let stale = headers(&[(CACHE_CONTROL, "max-age=60"), (AGE, "100")]);
        assert_eq!(freshness(&stale), Some(Duration::ZERO));
        let no_store = headers(&[(CACHE_CONTROL, "max-age=600"), (CACHE_CONTROL, "No-Store")]);
        assert_eq!(freshness(&no_store), Some(Duration::ZERO));
        assert_eq!(freshness(&headers(&[(CACHE_CONTROL, "public")])), None);
        assert_eq!(freshness(&HeaderMap::new()), None);
        assert_eq!(
            freshness(&headers(&[(CACHE_CONTROL, "max-age=soon")])),
            None
        );
    }
}
