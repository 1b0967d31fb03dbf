//! What the OpenAPI document says the same way of both protocols.

use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// A body of raw bytes.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct RawBytes(pub Vec<u8>);

/// The upload a request is about, by its id.
#[derive(IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
pub struct UploadPath(pub Uuid);
