//! What a draft request says, read as the draft reads it: a field that
//! does not parse is ignored.

use super::error::{ResumableError, ResumableResult};
use crate::engine::ChecksumAlgo;
use crate::protocol::kit::headers::parse_upload_metadata;
use crate::protocol::kit::{body_length, fields, header_text};
use actix_web::http::header::{self, ContentDisposition};
use actix_web::HttpRequest;

/// A Structured Field integer header; one that does not parse is ignored,
/// as the draft says.
pub(super) fn integer_header(req: &HttpRequest, name: &str) -> Option<u64> {
    header_text(req, name).and_then(fields::integer)
}

/// The upload's length, as far as a request starting at `offset` tells
/// it: `Upload-Length`, and, on a request that completes the upload, where
/// its content ends. The two must agree.
pub(super) fn told_total(
    req: &HttpRequest,
    offset: u64,
    completes: bool,
) -> ResumableResult<Option<u64>> {
    let declared = integer_header(req, "Upload-Length");
    let implied = body_length(req)
        .filter(|_| completes)
        .and_then(|len| offset.checked_add(len));
    match (declared, implied) {
        (Some(declared), Some(implied)) if declared != implied => {
            Err(ResumableError::InconsistentLength)
        }
        (declared, implied) => Ok(declared.or(implied)),
    }
}

/// The representation's name: `Content-Disposition`'s filename (the
/// draft's way), else tus-js-client's `Upload-Metadata` one.
pub(super) fn filename(req: &HttpRequest) -> String {
    let disposition = req
        .headers()
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| ContentDisposition::from_raw(v).ok());
    let from_disposition = disposition.and_then(|d| {
        d.get_filename_ext()
            .and_then(|ext| String::from_utf8(ext.value.clone()).ok())
            .or_else(|| d.get_filename().map(str::to_owned))
    });
    let from_metadata = || {
        let pairs = parse_upload_metadata(header_text(req, "Upload-Metadata")?)?;
        let (_, value) = pairs
            .into_iter()
            .find(|(key, _)| key == "filename" || key == "name")?;
        String::from_utf8(value?).ok()
    };
    from_disposition
        .or_else(from_metadata)
        .unwrap_or_else(|| "upload".to_owned())
}

/// `Repr-Digest` digests this server can check, by RFC 9530's names.
pub(super) fn offered_digests(req: &HttpRequest) -> ResumableResult<Vec<(ChecksumAlgo, Vec<u8>)>> {
    let Some(value) = header_text(req, "Repr-Digest") else {
        return Ok(Vec::new());
    };
    let members =
        fields::byte_sequences(value).ok_or(ResumableError::BadRequest("Malformed Repr-Digest"))?;
    let known = members.into_iter().filter_map(|(name, digest)| {
        let algo = match name.as_str() {
            "md5" => ChecksumAlgo::Md5,
            "sha" => ChecksumAlgo::Sha1,
            "sha-256" => ChecksumAlgo::Sha256,
            _ => return None,
        };
        Some((algo, digest))
    });
    Ok(known.collect())
}
