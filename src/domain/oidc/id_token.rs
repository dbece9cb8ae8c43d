//! Verifying an ID token (OpenID Connect Core 1.0 §3.1.3.7) with jsonwebtoken:
//! the algorithm (RS256, ES256 or EdDSA, matching the key's type and its `alg`
//! when the key names one), the signature, `iss`, `aud`, and, against the
//! server's clock rather than jsonwebtoken's, `exp` and `nbf` with 1 s of leeway
//! and `iat` not in the future; `nonce` when the caller gives one.
//!
//! Every refusal has a [`Refusal`] reason, for the audit trail only: the caller
//! hears one message whatever it was.

use jsonwebtoken::{jwk::Jwk, Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Deserializer};

use super::providers::ProviderSettings;

/// Clock leeway on `exp`, `nbf` and `iat`, in milliseconds.
const LEEWAY_MS: i64 = 1000;
/// Tokens longer than this are refused unread (Google's are about 1 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// OpenID Connect Core 1.0 §2: `sub` is at most 255 ASCII characters.
const MAX_SUBJECT: usize = 255;

/// Why a token was refused (for the audit row, never for the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    Malformed,
    UnsupportedAlgorithm,
    UnknownKey,
    KeyMismatch,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    MissingClaim,
    Expired,
    NotYetValid,
    IssuedInTheFuture,
    WrongNonce,
    UnusableSubject,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::UnsupportedAlgorithm => "unsupported algorithm",
            Refusal::UnknownKey => "unknown kid",
            Refusal::KeyMismatch => "key does not fit the algorithm",
            Refusal::BadSignature => "bad signature",
            Refusal::WrongIssuer => "wrong issuer",
            Refusal::WrongAudience => "wrong audience",
            Refusal::MissingClaim => "missing claim",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not yet valid",
            Refusal::IssuedInTheFuture => "issued in the future",
            Refusal::WrongNonce => "wrong nonce",
            Refusal::UnusableSubject => "unusable sub",
        }
    }
}

/// What the header says: the algorithm (one we accept) and the key id.
#[derive(Debug)]
pub(super) struct TokenHeader {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

/// Reads the header without trusting it (`alg: none` and unknown algorithms do
/// not parse, HS* and the rest are refused here, before any key is fetched).
pub(super) fn header(token: &str) -> Result<TokenHeader, Refusal> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Refusal::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Malformed)?;
    match header.alg {
        Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA => Ok(TokenHeader {
            alg: header.alg,
            kid: header.kid,
        }),
        _ => Err(Refusal::UnsupportedAlgorithm),
    }
}

/// The claims of a verified token that account matching uses.
#[derive(Debug)]
pub(super) struct VerifiedClaims {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub preferred_username: Option<String>,
    pub name: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: Option<f64>,
    iat: Option<f64>,
    nbf: Option<f64>,
    nonce: Option<String>,
    email: Option<String>,
    #[serde(default, deserialize_with = "true_or_false")]
    email_verified: bool,
    preferred_username: Option<String>,
    name: Option<String>,
}

/// What to check a token against.
pub(super) struct Expected<'a> {
    pub provider: &'a ProviderSettings,
    pub now_ms: i64,
    /// The nonce the app sent in its authentication request, when it gave one.
    pub nonce: Option<&'a str>,
}

/// Verifies `token` (whose header is `header`) with `jwk`.
pub(super) fn verify(
    token: &str,
    header: &TokenHeader,
    jwk: &Jwk,
    expected: &Expected<'_>,
) -> Result<VerifiedClaims, Refusal> {
    if let Some(named) = &jwk.common.key_algorithm {
        if named.to_string() != format!("{:?}", header.alg) {
            return Err(Refusal::KeyMismatch);
        }
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| Refusal::KeyMismatch)?;
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[&expected.provider.issuer]);
    validation.set_audience(&expected.provider.audiences);
    validation.set_required_spec_claims(&["iss", "aud", "sub", "exp"]);
    // Time is checked below, on the server's clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .map_err(|err| refusal_of(err.kind()))?
        .claims;
    check_times(&claims, expected.now_ms)?;
    if let Some(nonce) = expected.nonce {
        if claims.nonce.as_deref() != Some(nonce) {
            return Err(Refusal::WrongNonce);
        }
    }
    let subject = claims.sub;
    if subject.is_empty() || subject.chars().count() > MAX_SUBJECT || subject.contains('\0') {
        return Err(Refusal::UnusableSubject);
    }
    Ok(VerifiedClaims {
        subject,
        email: claims.email,
        email_verified: claims.email_verified,
        preferred_username: claims.preferred_username,
        name: claims.name,
    })
}

fn check_times(claims: &Claims, now_ms: i64) -> Result<(), Refusal> {
    let ms = |seconds: f64| (seconds * 1000.0) as i64;
    let (Some(exp), Some(iat)) = (claims.exp, claims.iat) else {
        return Err(Refusal::MissingClaim);
    };
    if now_ms > ms(exp).saturating_add(LEEWAY_MS) {
        return Err(Refusal::Expired);
    }
    if claims
        .nbf
        .is_some_and(|nbf| ms(nbf) > now_ms.saturating_add(LEEWAY_MS))
    {
        return Err(Refusal::NotYetValid);
    }
    if ms(iat) > now_ms.saturating_add(LEEWAY_MS) {
        return Err(Refusal::IssuedInTheFuture);
    }
    Ok(())
}

fn refusal_of(kind: &jsonwebtoken::errors::ErrorKind) -> Refusal {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::InvalidSignature => Refusal::BadSignature,
        ErrorKind::InvalidIssuer => Refusal::WrongIssuer,
        ErrorKind::InvalidAudience => Refusal::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) => Refusal::MissingClaim,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => Refusal::KeyMismatch,
        _ => Refusal::Malformed,
    }
}

/// `email_verified` as a boolean, or as the string some providers send.
fn true_or_false<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Bool(value) => value,
        serde_json::Value::String(text) => text.eq_ignore_ascii_case("true"),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

    fn unsigned(header: &str, claims: &str) -> String {
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    #[test]
    fn only_rs256_es256_and_eddsa_headers_pass() {
        for alg in ["RS256", "ES256", "EdDSA"] {
            let token = unsigned(&format!(r#"{{"alg":"{alg}","kid":"k"}}"#), "{}");
            let header = header(&token).expect(alg);
            assert_eq!(header.kid.as_deref(), Some("k"));
        }
        for (alg, refusal) in [
            ("HS256", Refusal::UnsupportedAlgorithm),
            ("RS512", Refusal::UnsupportedAlgorithm),
            ("none", Refusal::Malformed),
            ("None", Refusal::Malformed),
        ] {
            let token = unsigned(&format!(r#"{{"alg":"{alg}"}}"#), "{}");
            assert_eq!(header(&token).expect_err(alg), refusal, "{alg}");
        }
        assert_eq!(header("garbage").expect_err("garbage"), Refusal::Malformed);
        assert_eq!(
            header(&"a".repeat(20_000)).expect_err("long"),
            Refusal::Malformed
        );
    }

    fn claims(exp: f64, iat: f64, nbf: Option<f64>) -> Claims {
        Claims {
            sub: "s".into(),
            exp: Some(exp),
            iat: Some(iat),
            nbf,
            nonce: None,
            email: None,
            email_verified: false,
            preferred_username: None,
            name: None,
        }
    }

    #[test]
    fn times_have_one_second_of_leeway_on_the_given_clock() {
        let now_ms = 1_000_000_000;
        let now = 1_000_000.0;
        assert!(check_times(&claims(now, now, None), now_ms).is_ok());
        assert!(check_times(&claims(now - 1.0, now - 60.0, None), now_ms).is_ok());
        assert_eq!(
            check_times(&claims(now - 1.001, now - 60.0, None), now_ms),
            Err(Refusal::Expired)
        );
        assert_eq!(
            check_times(&claims(now + 60.0, now + 2.0, None), now_ms),
            Err(Refusal::IssuedInTheFuture)
        );
        assert_eq!(
            check_times(&claims(now + 60.0, now, Some(now + 2.0)), now_ms),
            Err(Refusal::NotYetValid)
        );
        let mut no_iat = claims(now + 60.0, now, None);
        no_iat.iat = None;
        assert_eq!(check_times(&no_iat, now_ms), Err(Refusal::MissingClaim));
    }

    #[test]
    fn email_verified_may_be_a_string() {
        let parse = |json: &str| {
            serde_json::from_str::<Claims>(json)
                .expect("claims")
                .email_verified
        };
        assert!(parse(r#"{"sub":"s","email_verified":true}"#));
        assert!(parse(r#"{"sub":"s","email_verified":"true"}"#));
        assert!(!parse(r#"{"sub":"s","email_verified":"false"}"#));
        assert!(!parse(r#"{"sub":"s"}"#));
        assert!(!parse(r#"{"sub":"s","email_verified":1}"#));
    }
}
