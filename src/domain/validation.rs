//! The rules for what callers send: usernames, emails, passwords, names, roles.
//! Pure functions, so they are property-tested here.

use super::error::DomainError;

pub const PASSWORD_MIN_CHARS: usize = 8;
pub const PASSWORD_MAX_CHARS: usize = 128;
/// Longer inputs are refused before anything else looks at them (and before hashing).
pub const PASSWORD_MAX_BYTES: usize = 1024;
const EMAIL_MAX: usize = 254;
const FULL_NAME_MAX: usize = 256;

/// 3 to 32 characters of `A-Z a-z 0-9 . _ -`.
pub fn username(field: &'static str, value: &str) -> Result<(), DomainError> {
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

/// A plausible address: one `@`, a non-empty local part, a dotted domain, no spaces
/// or control characters, at most 254 characters.
pub fn email(field: &'static str, value: &str) -> Result<(), DomainError> {
    let bad = || DomainError::invalid(field, "must be an email address like name@example.com");
    if value.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if value.len() > EMAIL_MAX {
        return Err(DomainError::invalid(
            field,
            "must be at most 254 characters",
        ));
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
    Ok(())
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

/// Optional, at most 256 characters, no control characters.
pub fn full_name(field: &'static str, value: &str) -> Result<(), DomainError> {
    if value.chars().count() > FULL_NAME_MAX {
        return Err(DomainError::invalid(
            field,
            "must be at most 256 characters",
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Something that must be present.
pub fn required(field: &'static str, value: &str) -> Result<(), DomainError> {
    if value.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
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

    proptest! {
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
