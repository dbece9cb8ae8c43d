//! Opaque page tokens for listings: a position in (created_at, id) order (or a
//! sequence number, for the audit trail), encoded
//! so callers cannot mistake it for anything they should build themselves.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};

use super::error::{DomainError, DomainResult};

pub const DEFAULT_PAGE_SIZE: u64 = 50;
pub const MAX_PAGE_SIZE: u64 = 500;
const VERSION: &str = "v1";

/// 0 means the default; negative or over the maximum is refused.
pub fn page_size(requested: i32) -> DomainResult<u64> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(DomainError::invalid("page_size", "must not be negative")),
        n if n as u64 > MAX_PAGE_SIZE => {
            Err(DomainError::invalid("page_size", "must be at most 500"))
        }
        n => Ok(n as u64),
    }
}

/// The position after the last item of a page.
pub fn encode(created_at: i64, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{VERSION}:{created_at}:{id}"))
}

/// The token of the page after one whose last item is at `last`; empty when there
/// is no more.
pub fn next_token(has_more: bool, last: Option<(i64, &str)>) -> String {
    match last {
        Some((created_at, id)) if has_more => encode(created_at, id),
        _ => String::new(),
    }
}

/// `None` for the first page; `INVALID_ARGUMENT` for anything we did not issue.
pub fn decode(token: &str) -> DomainResult<Option<(i64, String)>> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || DomainError::invalid("page_token", "is not a page token from a previous response");
    if token.len() > 256 {
        return Err(bad());
    }
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let mut parts = text.splitn(3, ':');
    let (Some(VERSION), Some(created_at), Some(id)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let created_at = created_at.parse::<i64>().map_err(|_| bad())?;
    let id = uuid::Uuid::parse_str(id)
        .map_err(|_| bad())?
        .hyphenated()
        .to_string();
    // Only tokens we issued: the same position spelled another way ("+5", an
    // upper-case or braced UUID) would start the page somewhere odd.
    if encode(created_at, &id) != token {
        return Err(bad());
    }
    Ok(Some((created_at, id)))
}

/// The position after the last item of a page of a listing ordered by a sequence
/// number (the audit trail, newest first).
pub fn encode_sequence(seq: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{VERSION}:seq:{seq}"))
}

/// `None` for the first page; `INVALID_ARGUMENT` for anything we did not issue.
pub fn decode_sequence(token: &str) -> DomainResult<Option<i64>> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || DomainError::invalid("page_token", "is not a page token from a previous response");
    if token.len() > 64 {
        return Err(bad());
    }
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let seq = text
        .strip_prefix(VERSION)
        .and_then(|rest| rest.strip_prefix(":seq:"))
        .and_then(|n| n.parse::<i64>().ok())
        .ok_or_else(bad)?;
    if encode_sequence(seq) != token {
        return Err(bad());
    }
    Ok(Some(seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn other_spellings_of_a_position_are_refused() {
        let id = "6f1c2a0e-1b7d-4c3e-9a55-0d2f3e4a5b6c";
        assert!(decode(&encode(42, id)).is_ok());
        for raw in [
            format!("v1:+42:{id}"),
            format!("v1:042:{id}"),
            format!("v1:42:{}", id.to_uppercase()),
            format!("v1:42:{{{id}}}"),
        ] {
            assert!(decode(&URL_SAFE_NO_PAD.encode(raw)).is_err());
        }
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0).ok(), Some(50));
        assert_eq!(page_size(3).ok(), Some(3));
        assert_eq!(page_size(500).ok(), Some(500));
        assert!(page_size(501).is_err());
        assert!(page_size(-1).is_err());
    }

    proptest! {
        #[test]
        fn tokens_round_trip(created_at in any::<i64>(), id in any::<u128>()) {
            let id = uuid::Uuid::from_u128(id).to_string();
            prop_assert_eq!(decode(&encode(created_at, &id)).ok().flatten(), Some((created_at, id)));
        }

        #[test]
        fn sequence_tokens_round_trip(seq in any::<i64>()) {
            prop_assert_eq!(decode_sequence(&encode_sequence(seq)).ok().flatten(), Some(seq));
        }

        #[test]
        fn any_string_is_a_sequence_token_or_invalid_argument(token in any::<String>()) {
            match decode_sequence(&token) {
                Ok(_) => {}
                Err(DomainError::InvalidArgument { field, .. }) => prop_assert_eq!(field, "page_token"),
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
        }

        #[test]
        fn any_string_is_a_token_or_invalid_argument(token in any::<String>()) {
            match decode(&token) {
                Ok(_) => {}
                Err(DomainError::InvalidArgument { field, .. }) => prop_assert_eq!(field, "page_token"),
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
        }
    }
}
