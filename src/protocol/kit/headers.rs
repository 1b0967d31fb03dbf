//! Pure parsers of request headers: no I/O, unit-tested.

/// `Content-Range: bytes S-E/T`, exactly as drf-chunked-upload's
/// `^bytes (\d+)-(\d+)/(\d+)$` (E inclusive). None when malformed, when a
/// number overflows, or when E < S.
pub fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.strip_prefix("bytes ")?;
    let (start, rest) = rest.split_once('-')?;
    let (end, total) = rest.split_once('/')?;
    let number = |s: &str| {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse::<u64>().ok()
        }
    };
    let (start, end, total) = (number(start)?, number(end)?, number(total)?);
    (start <= end).then_some((start, end, total))
}

/// What a `Range` request header asks of a file of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// No usable range: send the whole file (malformed and multi-range
    /// headers are ignored, as RFC 9110 allows).
    Whole,
    /// Bytes `start..=end`.
    Part {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

pub fn parse_range(value: Option<&str>, len: u64) -> ByteRange {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Whole;
    };
    let number = |s: &str| s.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), number(first), number(last)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(suffix)) => {
            if suffix == 0 || len == 0 {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Part {
                    start: len.saturating_sub(suffix),
                    end: len - 1,
                }
            }
        }
        (false, Some(start), None) if last.trim().is_empty() => {
            if start >= len {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Part {
                    start,
                    end: len - 1,
                }
            }
        }
        (false, Some(start), Some(end)) if start <= end => {
            if start >= len {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Part {
                    start,
                    end: end.min(len - 1),
                }
            }
        }
        _ => ByteRange::Whole,
    }
}

/// `Content-Disposition: attachment` for a download: an ASCII fallback name
/// and the exact UTF-8 name (RFC 6266 / RFC 8187).
pub fn attachment(filename: &str) -> String {
    disposition("attachment", filename)
}

/// `Content-Disposition` of `kind` (`inline`, `attachment`) naming
/// `filename`, as `attachment` does.
pub fn disposition(kind: &str, filename: &str) -> String {
    let fallback: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for byte in filename.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_follows_the_drf_pattern() {
        assert_eq!(parse_content_range("bytes 0-15/40"), Some((0, 15, 40)));
        assert_eq!(parse_content_range("bytes 32-39/40"), Some((32, 39, 40)));
        for bad in [
            "",
            "bytes 32-39/*",
            "bytes */40",
            "bytes  0-1/2",
            "bytes 0-1/2 ",
            "bytes=0-1/2",
            "bytes -1-2/3",
            "bytes +1-2/3",
            "bytes 5-3/10",
            "bytes 0-1/99999999999999999999999",
            "Bytes 0-1/2",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ranges() {
        use ByteRange::*;
        assert_eq!(parse_range(None, 10), Whole);
        assert_eq!(
            parse_range(Some("bytes=2-4"), 10),
            Part { start: 2, end: 4 }
        );
        assert_eq!(parse_range(Some("bytes=2-"), 10), Part { start: 2, end: 9 });
        assert_eq!(parse_range(Some("bytes=-3"), 10), Part { start: 7, end: 9 });
        assert_eq!(
            parse_range(Some("bytes=-30"), 10),
            Part { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=5-100"), 10),
            Part { start: 5, end: 9 }
        );
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Whole);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Whole);
        assert_eq!(parse_range(Some("items=0-1"), 10), Whole);
        assert_eq!(parse_range(Some("bytes=x-1"), 10), Whole);
    }

    #[test]
    fn attachment_names() {
        assert_eq!(
            attachment("a b.txt"),
            "attachment; filename=\"a b.txt\"; filename*=UTF-8''a%20b.txt"
        );
        assert_eq!(
            attachment("résumé \"1\".pdf"),
            "attachment; filename=\"r_sum_ _1_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%221%22.pdf"
        );
    }
}

/// Standard base64 (RFC 4648, padding optional), as tus clients encode
/// metadata values and checksums. None when malformed.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::engine::{general_purpose, DecodePaddingMode, Engine, GeneralPurpose};
    const PADDING_OPTIONAL: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        general_purpose::PAD.with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    PADDING_OPTIONAL.decode(text).ok()
}

/// tus `Upload-Metadata`: `key base64value` pairs separated by commas; the
/// value may be absent. None when malformed (bad key, bad base64, a key
/// twice), so that nothing unchecked is ever echoed back in a header.
pub fn parse_upload_metadata(value: &str) -> Option<Vec<(String, Option<Vec<u8>>)>> {
    let mut pairs: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    if value.trim().is_empty() {
        return Some(pairs);
    }
    for pair in value.split(',') {
        let mut parts = pair.trim().split(' ');
        let key = parts.next()?;
        let valid_key = !key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic() && b != b',');
        if !valid_key || pairs.iter().any(|(k, _)| k == key) {
            return None;
        }
        let value = match parts.next() {
            Some(encoded) => Some(base64_decode(encoded)?),
            None => None,
        };
        if parts.next().is_some() {
            return None;
        }
        pairs.push((key.to_owned(), value));
    }
    Some(pairs)
}

/// A tus offset or length: digits only.
pub fn parse_tus_number(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// tus `Upload-Checksum: <algorithm> <base64 digest>`.
pub fn parse_upload_checksum(value: &str) -> Option<(&str, Vec<u8>)> {
    let (algo, digest) = value.trim().split_once(' ')?;
    Some((algo, base64_decode(digest.trim())?))
}

#[cfg(test)]
mod tus_tests {
    use super::*;

    #[test]
    fn base64() {
        assert_eq!(base64_decode("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(base64_decode("aGVsbG8"), Some(b"hello".to_vec()));
        assert_eq!(base64_decode(""), Some(vec![]));
        assert_eq!(base64_decode("w6lsw6k="), Some("élé".as_bytes().to_vec()));
        assert_eq!(base64_decode("a"), None);
        assert_eq!(base64_decode("aGVsbG8*"), None);
    }

    #[test]
    fn metadata() {
        let parsed =
            parse_upload_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")
                .unwrap();
        assert_eq!(
            parsed[0],
            (
                "filename".into(),
                Some(b"world_domination_plan.pdf".to_vec())
            )
        );
        assert_eq!(parsed[1], ("is_confidential".into(), None));
        assert_eq!(parse_upload_metadata(""), Some(vec![]));
        assert_eq!(parse_upload_metadata("a !!!"), None);
        assert_eq!(parse_upload_metadata("a YQ==,a YQ=="), None);
        assert_eq!(parse_upload_metadata("a YQ== YQ=="), None);
        assert_eq!(parse_upload_metadata(",a"), None);
    }

    #[test]
    fn numbers_and_checksums() {
        assert_eq!(parse_tus_number("42"), Some(42));
        assert_eq!(parse_tus_number("-1"), None);
        assert_eq!(parse_tus_number("1e3"), None);
        assert_eq!(parse_tus_number("99999999999999999999999"), None);
        assert_eq!(
            parse_upload_checksum("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0="),
            Some((
                "sha1",
                base64_decode("Kq5sNclPz7QV2+lfQIuc6R7oRu0=").unwrap()
            ))
        );
        assert_eq!(parse_upload_checksum("sha1"), None);
    }
}
