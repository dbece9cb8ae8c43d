//! The rules for what callers send: usernames, emails, passwords, names, roles.
//! Pure functions, so they are property-tested here.
//!
//! Emails and full names are parsed into values ([`Email`], [`FullName`]) that
//! exist only in Unicode NFC and valid, so one address typed in NFC or NFD is one
//! account and the stored form is what every comparison sees; a login name is
//! parsed into [`LoginName`], the same normalisation lower-cased. A NUL byte is
//! refused in every name before any of them reaches the database (PostgreSQL
//! cannot store one in text and answered with an error, not a verdict).

use std::borrow::Cow;

use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use super::error::DomainError;

pub const PASSWORD_MIN_CHARS: usize = 8;
pub const PASSWORD_MAX_CHARS: usize = 128;
/// Longer inputs are refused before anything else looks at them (and before hashing).
pub const PASSWORD_MAX_BYTES: usize = 1024;
const EMAIL_MAX: usize = 254;
const FULL_NAME_MAX: usize = 256;
const LOGIN_MAX: usize = 254;

/// 3 to 32 characters of `A-Z a-z 0-9 . _ -`.
pub fn username(field: &'static str, value: &str) -> Result<(), DomainError> {
    no_nul(field, value)?;
    let len = value.chars().count();
    if !(3..=32).contains(&len) {
        return Err(DomainError::invalid(field, "must be 3 to 32 characters"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(DomainError::invalid(
            field,
            "may contain only letters A-Z a-z, digits, '.', '_' and '-'",
        ));
    }
    Ok(())
}

/// Checks an email address; see [`Email::parse`], which also gives the form to store.
pub fn email(field: &'static str, value: &str) -> Result<(), DomainError> {
    Email::parse(field, value).map(drop)
}

/// An email address as it is stored and returned: NFC, and plausible — one `@`, a
/// non-empty local part, a dotted domain, no spaces, control, invisible or
/// bidirectional control characters, at most 254 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(field: &'static str, value: &str) -> Result<Self, DomainError> {
        let bad = || DomainError::invalid(field, "must be an email address like name@example.com");
        if value.is_empty() {
            return Err(DomainError::invalid(field, "must not be empty"));
        }
        no_nul(field, value)?;
        let value = nfc(value);
        if value.len() > EMAIL_MAX {
            return Err(DomainError::invalid(
                field,
                "must be at most 254 characters",
            ));
        }
        if value
            .chars()
            .any(|c| is_bidi_control(c) || is_zero_width(c))
        {
            return Err(DomainError::invalid(field, INVISIBLE_IN_EMAIL));
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (local, domain) = value.rsplit_once('@').ok_or_else(bad)?;
        if local.is_empty() || local.len() > 64 || local.contains('@') {
            return Err(bad());
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        };
        if labels.len() < 2 || !labels.iter().all(label_ok) {
            return Err(bad());
        }
        Ok(Email(value.into_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// 8 to 128 characters; over 1 KiB is refused without counting characters.
pub fn password(field: &'static str, value: &str) -> Result<(), DomainError> {
    if value.len() > PASSWORD_MAX_BYTES {
        return Err(DomainError::invalid(
            field,
            "must be at most 128 characters",
        ));
    }
    let len = value.chars().count();
    if len < PASSWORD_MIN_CHARS {
        return Err(DomainError::invalid(field, "must be at least 8 characters"));
    }
    if len > PASSWORD_MAX_CHARS {
        return Err(DomainError::invalid(
            field,
            "must be at most 128 characters",
        ));
    }
    Ok(())
}

/// Checks a full name; see [`FullName::parse`], which also gives the form to store.
pub fn full_name(field: &'static str, value: &str) -> Result<(), DomainError> {
    FullName::parse(field, value).map(drop)
}

/// A full name as it is stored and returned: NFC, optional (may be empty), at most
/// 256 characters, no control or bidirectional control characters. (Zero-width
/// joiners stay: scripts and emoji need them in names.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FullName(String);

impl FullName {
    pub fn parse(field: &'static str, value: &str) -> Result<Self, DomainError> {
        no_nul(field, value)?;
        let value = nfc(value);
        if value.chars().count() > FULL_NAME_MAX {
            return Err(DomainError::invalid(
                field,
                "must be at most 256 characters",
            ));
        }
        if value.chars().any(is_bidi_control) {
            return Err(DomainError::invalid(field, BIDI_IN_NAME));
        }
        if value.chars().any(char::is_control) {
            return Err(DomainError::invalid(
                field,
                "must not contain control characters",
            ));
        }
        Ok(FullName(value.into_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// What Login looks an account up by: a username or an email, in NFC and lower
/// case, as the `*_lc` columns hold them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginName(String);

impl LoginName {
    pub fn parse(field: &'static str, value: &str) -> Result<Self, DomainError> {
        required(field, value)?;
        if value.len() > LOGIN_MAX {
            return Err(DomainError::invalid(
                field,
                "must be at most 254 characters",
            ));
        }
        no_nul(field, value)?;
        let canonical = nfc(value).to_lowercase();
        // Normalising and lower-casing can lengthen a name; the columns hold 254.
        if canonical.chars().count() > LOGIN_MAX {
            return Err(DomainError::invalid(
                field,
                "must be at most 254 characters",
            ));
        }
        Ok(LoginName(canonical))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Refuses a NUL byte: no name may hold one, and PostgreSQL text cannot.
pub fn no_nul(field: &'static str, value: &str) -> Result<(), DomainError> {
    if value.contains('\0') {
        return Err(DomainError::invalid(field, "must not contain a NUL byte"));
    }
    Ok(())
}

const INVISIBLE_IN_EMAIL: &str = "must not contain zero-width or bidirectional control characters \
     (U+200B-U+200D, U+202A-U+202E, U+2066-U+2069, U+FEFF)";
const BIDI_IN_NAME: &str = "must not contain bidirectional control characters \
     (U+202A-U+202E, U+2066-U+2069, U+FEFF)";

/// Embeddings, overrides and isolates (which can make text read in another order
/// than it is stored), and U+FEFF (a byte-order mark, invisible in text).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// Zero-width space, non-joiner and joiner: two addresses that look the same.
fn is_zero_width(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200D}')
}

/// `value` in Unicode Normalization Form C, borrowed when it is already.
fn nfc(value: &str) -> Cow<'_, str> {
    match is_nfc_quick(value.chars()) {
        IsNormalized::Yes => Cow::Borrowed(value),
        IsNormalized::No | IsNormalized::Maybe => Cow::Owned(value.nfc().collect()),
    }
}

/// Something that must be present.
pub fn required(field: &'static str, value: &str) -> Result<(), DomainError> {
    if value.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    Ok(())
}

/// A role's name: 2 to 64 characters of `a-z 0-9 . _ : -`.
pub fn role_name(field: &'static str, value: &str) -> Result<(), DomainError> {
    if !(2..=64).contains(&value.len()) {
        return Err(DomainError::invalid(field, "must be 2 to 64 characters"));
    }
    if !value.bytes().all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b':' | b'-')
    }) {
        return Err(DomainError::invalid(
            field,
            "may contain only a-z, 0-9, '.', '_', ':' and '-'",
        ));
    }
    Ok(())
}

/// A permission: 1 to 128 printable characters without spaces.
pub fn permission(field: &'static str, value: &str) -> Result<(), DomainError> {
    if value.is_empty() || value.chars().count() > 128 {
        return Err(DomainError::invalid(field, "must be 1 to 128 characters"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(DomainError::invalid(
            field,
            "must be printable characters without spaces",
        ));
    }
    Ok(())
}

/// A UUID in its usual text form.
pub fn uuid(field: &'static str, value: &str) -> Result<uuid::Uuid, DomainError> {
    required(field, value)?;
    uuid::Uuid::parse_str(value).map_err(|_| DomainError::invalid(field, "must be a UUID"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn role_names_and_permissions_follow_the_rules() {
        assert!(role_name("n", "billing-admin").is_ok());
        assert!(role_name("n", "team:ops.on_call").is_ok());
        assert!(role_name("n", "a").is_err());
        assert!(role_name("n", &"a".repeat(65)).is_err());
        assert!(role_name("n", "Billing").is_err());
        assert!(role_name("n", "bill ing").is_err());
        assert!(permission("p", "billing.refund").is_ok());
        assert!(permission("p", "files:read/*").is_ok());
        assert!(permission("p", "").is_err());
        assert!(permission("p", &"p".repeat(129)).is_err());
        assert!(permission("p", "two words").is_err());
        assert!(permission("p", "tab\there").is_err());
        assert!(permission("p", "nul\0").is_err());
    }

    #[test]
    fn usernames_follow_the_rules() {
        assert!(username("u", "Alice").is_ok());
        assert!(username("u", "a.b_c-9").is_ok());
        assert!(username("u", "ab").is_err());
        assert!(username("u", &"a".repeat(33)).is_err());
        assert!(username("u", "al ice").is_err());
        assert!(username("u", "alicé").is_err());
    }

    #[test]
    fn emails_must_be_plausible() {
        assert!(email("e", "alice@example.com").is_ok());
        assert!(email("e", "Alice.B+tag@sub.example.org").is_ok());
        for bad in [
            "",
            "alice",
            "alice@",
            "@example.com",
            "alice@example",
            "a b@example.com",
            "alice@exa mple.com",
            "alice@.com",
            "alice@example..com",
        ] {
            assert!(email("e", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn passwords_are_8_to_128_characters() {
        assert!(password("p", "12345678").is_ok());
        assert!(password("p", &"x".repeat(128)).is_ok());
        assert!(password("p", "1234567").is_err());
        assert!(password("p", &"x".repeat(129)).is_err());
        assert!(password("p", &"x".repeat(5000)).is_err());
        // Characters, not bytes: 100 two-byte characters are fine.
        assert!(password("p", &"é".repeat(100)).is_ok());
    }

    fn refused_field(result: Result<impl std::fmt::Debug, DomainError>) -> Option<&'static str> {
        match result {
            Err(DomainError::InvalidArgument { field, .. }) => Some(field),
            _ => None,
        }
    }

    fn is_nfc(value: &str) -> bool {
        unicode_normalization::is_nfc(value)
    }

    /// Characters refused in an email; all but the zero-width ones also in names.
    const FORBIDDEN_IN_EMAIL: [char; 13] = [
        '\u{200B}', '\u{200C}', '\u{200D}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}',
        '\u{202E}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', '\u{FEFF}',
    ];

    #[test]
    fn nfc_and_nfd_spellings_are_one_email_and_one_name() {
        let composed = Email::parse("email", "caf\u{e9}@example.com").expect("NFC");
        let decomposed = Email::parse("email", "cafe\u{301}@example.com").expect("NFD");
        assert_eq!(composed, decomposed);
        assert_eq!(decomposed.as_str(), "caf\u{e9}@example.com");
        let name = FullName::parse("full_name", "Zoe\u{308} Le\u{301}vy").expect("NFD name");
        assert_eq!(name.as_str(), "Zo\u{eb} L\u{e9}vy");
        assert_eq!(
            LoginName::parse("username", "CAFE\u{301}@Example.com")
                .expect("login")
                .as_str(),
            "caf\u{e9}@example.com"
        );
    }

    #[test]
    fn invisible_and_bidi_characters_are_refused_naming_the_field() {
        for c in FORBIDDEN_IN_EMAIL {
            let address = format!("ali{c}ce@example.com");
            assert_eq!(
                refused_field(Email::parse("email", &address)),
                Some("email"),
                "U+{:04X} in an email",
                c as u32
            );
            let name = format!("Alice {c}Example");
            let refused = refused_field(FullName::parse("full_name", &name));
            if ('\u{200B}'..='\u{200D}').contains(&c) {
                assert_eq!(refused, None, "U+{:04X} is fine in a name", c as u32);
            } else {
                assert_eq!(refused, Some("full_name"), "U+{:04X} in a name", c as u32);
            }
        }
        // A family emoji is joined with ZWJ: a name may hold it.
        assert!(FullName::parse("full_name", "Ana \u{1F469}\u{200D}\u{1F467}").is_ok());
    }

    #[test]
    fn a_nul_byte_is_refused_in_every_name() {
        assert_eq!(
            refused_field(username("username", "al\0ice")),
            Some("username")
        );
        assert_eq!(
            refused_field(Email::parse("email", "al\0ice@example.com")),
            Some("email")
        );
        assert_eq!(
            refused_field(FullName::parse("full_name", "Al\0ice")),
            Some("full_name")
        );
        assert_eq!(
            refused_field(LoginName::parse("username", "alice\0")),
            Some("username")
        );
        assert_eq!(refused_field(no_nul("username", "\0")), Some("username"));
        assert!(no_nul("username", "alice").is_ok());
    }

    proptest! {
        #[test]
        fn accepted_emails_and_names_are_nfc_and_parse_to_themselves(value in any::<String>()) {
            if let Ok(email) = Email::parse("email", &value) {
                prop_assert!(is_nfc(email.as_str()));
                prop_assert_eq!(Email::parse("email", email.as_str()).ok(), Some(email.clone()));
            }
            if let Ok(name) = FullName::parse("full_name", &value) {
                prop_assert!(is_nfc(name.as_str()));
                prop_assert_eq!(FullName::parse("full_name", name.as_str()).ok(), Some(name.clone()));
            }
        }

        #[test]
        fn any_normal_form_parses_to_the_same_values(
            local in "[a-zA-Z0-9\u{e0}-\u{ff}\u{300}-\u{36f}._+]{1,20}",
            domain in "[a-z\u{e0}-\u{ff}]{1,20}",
            name in "[ a-zA-Z\u{c0}-\u{17f}\u{300}-\u{36f}\u{1e00}-\u{1eff}]{0,40}",
        ) {
            let address = format!("{local}@{domain}.example");
            let nfd: String = address.nfd().collect();
            let nfc: String = address.nfc().collect();
            prop_assert_eq!(Email::parse("email", &nfd).ok(), Email::parse("email", &nfc).ok());
            prop_assert_eq!(
                LoginName::parse("username", &nfd).ok(),
                LoginName::parse("username", &nfc).ok()
            );
            let (nfd, nfc): (String, String) = (name.nfd().collect(), name.nfc().collect());
            prop_assert_eq!(FullName::parse("full_name", &nfd).ok(), FullName::parse("full_name", &nfc).ok());
        }

        #[test]
        fn forbidden_characters_are_refused_wherever_they_are(
            before in "[a-z]{0,10}",
            after in "[a-z]{1,10}",
            which in 0..FORBIDDEN_IN_EMAIL.len(),
            in_domain in any::<bool>(),
        ) {
            let c = FORBIDDEN_IN_EMAIL[which];
            let address = if in_domain {
                format!("x{before}@{after}{c}.example")
            } else {
                format!("{before}{c}{after}@example.com")
            };
            prop_assert_eq!(refused_field(Email::parse("email", &address)), Some("email"));
            let name = format!("{before}{c}{after}");
            let refused = refused_field(FullName::parse("full_name", &name));
            prop_assert_eq!(refused.is_some(), !is_zero_width(c));
        }

        #[test]
        fn a_nul_byte_anywhere_is_refused(before in any::<String>(), after in any::<String>()) {
            let value = format!("{before}\0{after}");
            prop_assert_eq!(refused_field(username("username", &value)), Some("username"));
            prop_assert_eq!(refused_field(Email::parse("email", &value)), Some("email"));
            prop_assert_eq!(refused_field(FullName::parse("full_name", &value)), Some("full_name"));
            if value.len() <= LOGIN_MAX {
                prop_assert_eq!(refused_field(LoginName::parse("username", &value)), Some("username"));
            }
        }

        #[test]
        fn valid_usernames_are_accepted(name in "[A-Za-z0-9._-]{3,32}") {
            prop_assert!(username("u", &name).is_ok());
        }

        #[test]
        fn username_validation_never_panics(name in any::<String>()) {
            let accepted = username("u", &name).is_ok();
            let expected = (3..=32).contains(&name.chars().count())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            prop_assert_eq!(accepted, expected);
        }

        #[test]
        fn email_validation_never_panics(value in any::<String>()) {
            let _ = email("e", &value);
        }

        #[test]
        fn generated_addresses_are_accepted(local in "[a-z0-9._+]{1,20}", domain in "[a-z0-9]{1,20}", tld in "[a-z]{2,6}") {
            let address = format!("{local}@{domain}.{tld}");
            prop_assert!(email("e", &address).is_ok());
        }

        #[test]
        fn password_length_rule_counts_characters(value in any::<String>()) {
            let n = value.chars().count();
            let expected = value.len() <= PASSWORD_MAX_BYTES && (PASSWORD_MIN_CHARS..=PASSWORD_MAX_CHARS).contains(&n);
            prop_assert_eq!(password("p", &value).is_ok(), expected);
        }
    }
}
