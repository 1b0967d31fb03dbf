//! Request bodies of the chunked protocol: raw, multipart (read by the
//! toolkit's form reader: its part named `file` is the chunk), and the
//! small forms of a completion.

use super::{ChunkedError, ChunkedResult, RequestError};
use crate::engine::{EngineError, Progress};
use crate::protocol::kit::form::{self, read_field, Form, FormError, FORM_LIMIT};
use crate::protocol::kit::gate::GatedPayload;
use actix_multipart::{Field, Multipart};
use actix_web::http::header;
use actix_web::{web, HttpRequest};
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

pub(super) enum Body {
    Multipart(Multipart),
    Raw(GatedPayload),
    /// A urlencoded or JSON form: fields, no chunk.
    Form {
        json: bool,
        payload: web::Payload,
    },
}

pub(super) fn body(req: &HttpRequest, payload: web::Payload) -> ChunkedResult<Body> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(Body::Raw(GatedPayload::new(req, payload)));
    };
    let media = value.to_str().unwrap_or("").trim().to_owned();
    let essence = media
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "multipart/form-data" => Ok(Body::Multipart(Multipart::new(
            req.headers(),
            GatedPayload::new(req, payload),
        ))),
        "application/octet-stream" => Ok(Body::Raw(GatedPayload::new(req, payload))),
        "application/x-www-form-urlencoded" => Ok(Body::Form {
            json: false,
            payload,
        }),
        "application/json" => Ok(Body::Form {
            json: true,
            payload,
        }),
        _ => Err(RequestError::UnsupportedMediaType(media).into()),
    }
}

impl From<FormError> for ChunkedError {
    fn from(err: FormError) -> Self {
        match err {
            FormError::Malformed(reason) => RequestError::Multipart(reason).into(),
            FormError::TooLarge => RequestError::FormTooLarge.into(),
            FormError::Engine(err) => err.into(),
        }
    }
}

/// Reads a multipart form whose part named `file` is the chunk, which
/// `on_file` takes.
pub(super) async fn read_form<T, F, Fut>(
    form: Multipart,
    wait: Duration,
    on_file: F,
) -> ChunkedResult<Form<T>>
where
    F: FnMut(HashMap<String, String>, Field) -> Fut,
    Fut: Future<Output = ChunkedResult<T>>,
{
    let first_file =
        |_: &HashMap<String, String>, name: &str, _, taken| taken == 0 && name == "file";
    form::read_form(form, wait, first_file, on_file).await
}

/// The fields of a small form body: urlencoded, JSON or multipart (a raw
/// body has none).
pub(super) async fn read_small_form(
    req: &HttpRequest,
    payload: web::Payload,
    wait: Duration,
) -> ChunkedResult<HashMap<String, String>> {
    let (json, payload) = match body(req, payload)? {
        Body::Multipart(form) => {
            let form = read_form(form, wait, |_, mut field| async move {
                let mut progress = Progress::new(wait);
                read_field(&mut field, &mut progress, false, 0)
                    .await
                    .map(drop)
                    .map_err(ChunkedError::from)
            })
            .await?;
            return Ok(form.fields);
        }
        Body::Raw(_) => return Ok(HashMap::new()),
        Body::Form { json, payload } => (json, payload),
    };
    let bytes = tokio::time::timeout(wait, payload.to_bytes_limited(FORM_LIMIT))
        .await
        .map_err(|_| EngineError::ReadTimeout)?
        .map_err(|_| RequestError::MalformedBody)?
        .map_err(|err| EngineError::Body(err.to_string()))?;
    if !json {
        return serde_urlencoded::from_bytes(&bytes)
            .map_err(|_| RequestError::MalformedBody.into());
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(HashMap::new());
    }
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| RequestError::MalformedBody)?;
    Ok(object
        .into_iter()
        .filter_map(|(key, value)| match value {
            serde_json::Value::String(text) => Some((key, text)),
            serde_json::Value::Null => None,
            other => Some((key, other.to_string())),
        })
        .collect())
}
