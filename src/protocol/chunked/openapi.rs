//! What the OpenAPI document says of the chunked protocol's bodies that no
//! handler reads into a type (forms are parsed as they stream) and of its
//! errors, which are rendered in one place.

use utoipa::{IntoParams, ToResponse, ToSchema};

/// A chunk as a form, as drf-chunked-upload takes it. The other way is a
/// raw body (`application/octet-stream`) with the name in `?filename=` or
/// `Content-Disposition`.
#[derive(ToSchema)]
pub struct ChunkForm {
    /// The file's name; required with the first chunk.
    pub filename: Option<String>,
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// A whole file and its checksum in one form.
#[derive(ToSchema)]
pub struct WholeFileForm {
    pub filename: String,
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// The file's MD5, in hex (`sha256` when the server checksums so).
    pub md5: String,
}

/// The completion of an upload: its checksum (urlencoded, JSON or
/// multipart; or `?md5=`).
#[derive(ToSchema)]
pub struct CompletionForm {
    /// The file's MD5, in hex (`sha256` when the server checksums so).
    pub md5: Option<String>,
}

/// Every error's body, as DRF renders them: `detail`, a message (for an
/// invalid field, an object of messages by field); an offset mismatch adds
/// `expected_offset` and `provided_offset`, a busy upload `offset`.
#[derive(ToSchema)]
pub struct Problem {
    pub detail: serde_json::Value,
}

/// Every refusal, with its status (see docs/api-chunked.md) and DRF's body.
#[derive(ToResponse)]
#[response(description = "Refused: the status and `detail` say why (docs/api-chunked.md)")]
pub struct ChunkedRefusal(#[to_schema] pub Problem);

/// Where a chunk goes.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
pub struct ChunkHeaders {
    /// `bytes <first>-<last>/<total>`.
    #[param(
        rename = "Content-Range",
        pattern = r"^bytes [0-9]{1,12}-[0-9]{1,12}/[0-9]{1,12}$",
        example = "bytes 0-4/10"
    )]
    pub content_range: String,
}

/// A raw body's name (a form names it in its `filename` field).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RawName {
    /// The file's name.
    #[param(example = "hello.txt")]
    pub filename: Option<String>,
}
