//! The providers whose ID tokens authd accepts, as `AUTHD_OIDC_PROVIDERS_FILE`
//! lists them: parsed and checked whole at start-up, so a bad file stops the
//! server with one line saying which provider and which field is wrong.
//!
//! The file is a JSON list of `{"name", "issuer", "audiences": [...], "jwks_uri"
//! (optional), "create_users" (optional, default false)}`; unknown fields are
//! refused (a misspelt `create_users` must not silently mean false). Issuers and
//! JWK Set addresses are `https://`, or `http://` on a loopback address only.

use std::{collections::HashSet, net::IpAddr};

use reqwest::Url;
use serde::Deserialize;

/// One provider, valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderSettings {
    /// What `LoginWithIdToken.provider` names it by: 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// Exactly the `iss` of its ID tokens (for Google `https://accounts.google.com`).
    pub issuer: String,
    /// The `aud` values accepted (for Google the app's OAuth client ids).
    pub audiences: Vec<String>,
    /// Where its JWK Set is; `None`: from the issuer's discovery document.
    pub jwks_uri: Option<Url>,
    /// A stranger's first sign-in creates an account.
    pub create_users: bool,
}

impl ProviderSettings {
    /// `{issuer}/.well-known/openid-configuration` (OpenID Connect Discovery 1.0 §4).
    pub fn discovery_uri(&self) -> Result<Url, String> {
        let base = self.issuer.trim_end_matches('/');
        Url::parse(&format!("{base}/.well-known/openid-configuration"))
            .map_err(|e| format!("issuer: {e}"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderEntry {
    name: String,
    issuer: String,
    audiences: Vec<String>,
    #[serde(default)]
    jwks_uri: Option<String>,
    #[serde(default)]
    create_users: bool,
}

const NAME_MAX: usize = 64;

/// Parses and checks the file's text; the error is one line naming the provider
/// (by position and name) and the field.
pub fn parse(text: &str) -> Result<Vec<ProviderSettings>, String> {
    let entries: Vec<ProviderEntry> =
        serde_json::from_str(text).map_err(|e| format!("not a JSON list of providers: {e}"))?;
    let mut names = HashSet::new();
    let mut providers = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let which = format!("provider {} ({:?})", index + 1, entry.name);
        let provider = check(entry).map_err(|problem| format!("{which}: {problem}"))?;
        if !names.insert(provider.name.to_lowercase()) {
            return Err(format!("{which}: name: another provider has this name"));
        }
        providers.push(provider);
    }
    Ok(providers)
}

fn check(entry: ProviderEntry) -> Result<ProviderSettings, String> {
    let name_ok = (1..=NAME_MAX).contains(&entry.name.len())
        && entry
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !name_ok {
        return Err("name: must be 1 to 64 characters of A-Z a-z 0-9 . _ -".into());
    }
    let issuer = web_address("issuer", &entry.issuer)?;
    if issuer.query().is_some() || issuer.fragment().is_some() {
        return Err("issuer: must have no query or fragment".into());
    }
    if entry.audiences.is_empty() {
        return Err("audiences: must list at least one (for Google: the OAuth client id)".into());
    }
    if entry.audiences.iter().any(|a| a.trim().is_empty()) {
        return Err("audiences: must not hold an empty value".into());
    }
    let jwks_uri = entry
        .jwks_uri
        .as_deref()
        .map(|uri| web_address("jwks_uri", uri))
        .transpose()?;
    Ok(ProviderSettings {
        name: entry.name,
        issuer: entry.issuer,
        audiences: entry.audiences,
        jwks_uri,
        create_users: entry.create_users,
    })
}

/// An `https://` address, or `http://` on a loopback address (a provider on the
/// same machine, as in development and tests).
pub(super) fn web_address(field: &str, value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("{field}: {e} ({value:?})"))?;
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(format!(
            "{field}: http:// is accepted only on a loopback address (127.0.0.1, [::1], \
             localhost); use https:// ({value:?})"
        )),
        _ => Err(format!("{field}: must be an https:// address ({value:?})")),
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(fields: &str) -> Result<Vec<ProviderSettings>, String> {
        parse(&format!("[{{{fields}}}]"))
    }

    #[test]
    fn a_google_entry_parses_with_discovery_and_no_account_creation() {
        let parsed = one(
            r#""name": "google", "issuer": "https://accounts.google.com",
               "audiences": ["123.apps.googleusercontent.com"]"#,
        )
        .expect("valid");
        assert_eq!(parsed.len(), 1);
        let google = &parsed[0];
        assert_eq!(google.name, "google");
        assert!(google.jwks_uri.is_none() && !google.create_users);
        assert_eq!(
            google.discovery_uri().expect("uri").as_str(),
            "https://accounts.google.com/.well-known/openid-configuration"
        );
        assert_eq!(parse("[]").expect("no providers"), vec![]);
    }

    #[test]
    fn http_is_accepted_on_loopback_only() {
        for issuer in [
            "http://127.0.0.1:8080",
            "http://[::1]:8080/realms/x",
            "http://localhost",
        ] {
            let fields = format!(r#""name": "dev", "issuer": "{issuer}", "audiences": ["a"]"#);
            assert!(one(&fields).is_ok(), "{issuer}");
        }
        let remote =
            one(r#""name": "dev", "issuer": "http://idp.example.com", "audiences": ["a"]"#)
                .expect_err("plain http elsewhere");
        assert!(
            remote.contains("provider 1 (\"dev\"): issuer: http:// is accepted only on a loopback"),
            "{remote}"
        );
        let jwks = one(
            r#""name": "dev", "issuer": "https://idp.example.com", "audiences": ["a"],
               "jwks_uri": "http://10.0.0.1/keys""#,
        )
        .expect_err("plain http jwks_uri");
        assert!(jwks.contains("jwks_uri: http://"), "{jwks}");
    }

    #[test]
    fn each_problem_names_the_provider_and_the_field() {
        for (fields, expected) in [
            (
                r#""name": "", "issuer": "https://a.example", "audiences": ["a"]"#,
                "name:",
            ),
            (
                r#""name": "a b", "issuer": "https://a.example", "audiences": ["a"]"#,
                "name:",
            ),
            (
                r#""name": "x", "issuer": "not a url", "audiences": ["a"]"#,
                "issuer:",
            ),
            (
                r#""name": "x", "issuer": "ftp://a.example", "audiences": ["a"]"#,
                "issuer:",
            ),
            (
                r#""name": "x", "issuer": "https://a.example?x=1", "audiences": ["a"]"#,
                "issuer:",
            ),
            (
                r#""name": "x", "issuer": "https://a.example", "audiences": []"#,
                "audiences:",
            ),
            (
                r#""name": "x", "issuer": "https://a.example", "audiences": [" "]"#,
                "audiences:",
            ),
        ] {
            let err = one(fields).expect_err(fields);
            assert!(err.starts_with("provider 1 ("), "{err}");
            assert!(err.contains(expected), "{fields}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
        let typo = one(r#""name": "x", "issuer": "https://a.example", "audiences": ["a"], "create_user": true"#)
            .expect_err("unknown field");
        assert!(typo.contains("create_user"), "{typo}");
        let twice = parse(
            r#"[{"name": "g", "issuer": "https://a.example", "audiences": ["a"]},
                {"name": "G", "issuer": "https://b.example", "audiences": ["b"]}]"#,
        )
        .expect_err("duplicate");
        assert!(
            twice.contains("provider 2 (\"G\"): name: another provider"),
            "{twice}"
        );
        assert!(parse("{}")
            .expect_err("not a list")
            .contains("not a JSON list"));
    }
}
