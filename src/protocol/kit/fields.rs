//! The few Structured Field values (RFC 9651) the IETF upload draft and
//! Digest Fields (RFC 9530) use. A value that does not parse is `None`:
//! the draft says such a field is ignored.

use super::headers::base64_decode;

/// An Item's bare value, its parameters (`;key=value`) set aside.
fn bare_item(value: &str) -> &str {
    value.split(';').next().unwrap_or("").trim()
}

/// A non-negative Integer item: at most 15 digits.
pub fn integer(value: &str) -> Option<u64> {
    let digits = bare_item(value);
    let valid =
        !digits.is_empty() && digits.len() <= 15 && digits.bytes().all(|b| b.is_ascii_digit());
    valid.then(|| digits.parse().ok()).flatten()
}

/// A Boolean item: `?1` or `?0`.
pub fn boolean(value: &str) -> Option<bool> {
    match bare_item(value) {
        "?1" => Some(true),
        "?0" => Some(false),
        _ => None,
    }
}

/// The Byte Sequence members (`key=:base64:`) of a Dictionary, in order;
/// members of other types are skipped. None when the Dictionary is
/// malformed.
pub fn byte_sequences(value: &str) -> Option<Vec<(String, Vec<u8>)>> {
    let mut members = Vec::new();
    for member in value.split(',') {
        let member = bare_item(member);
        if member.is_empty() {
            return None;
        }
        let (key, item) = member.split_once('=').unwrap_or((member, "?1"));
        let valid_key = key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b));
        if !valid_key || key.is_empty() {
            return None;
        }
        if let Some(encoded) = item.strip_prefix(':').and_then(|i| i.strip_suffix(':')) {
            members.push((key.to_owned(), base64_decode(encoded)?));
        }
    }
    Some(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items() {
        assert_eq!(integer("42"), Some(42));
        assert_eq!(integer(" 7;a=1"), Some(7));
        assert_eq!(integer("-1"), None);
        assert_eq!(integer("1.5"), None);
        assert_eq!(integer("1234567890123456"), None);
        assert_eq!(boolean("?1"), Some(true));
        assert_eq!(boolean("?0;x"), Some(false));
        assert_eq!(boolean("1"), None);
        assert_eq!(boolean("?true"), None);
    }

    #[test]
    fn digests() {
        assert_eq!(
            byte_sequences("sha-256=:aGVsbG8=:, md5=:aGk=:;p=1, x=3"),
            Some(vec![
                ("sha-256".into(), b"hello".to_vec()),
                ("md5".into(), b"hi".to_vec())
            ])
        );
        assert_eq!(byte_sequences("sha-256=:!!:"), None);
        assert_eq!(byte_sequences("SHA=:aGk=:"), None);
        assert_eq!(byte_sequences("a=:aGk=:,"), None);
    }
}
