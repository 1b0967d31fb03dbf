//! Request bodies of the chunked protocol: raw, multipart (its file part
//! streamed, its other fields bounded and held to one progress rule), and
//! the small forms of a completion.

use super::{ChunkedResult, RequestError};
use crate::engine::{EngineError, Progress};
use crate::protocol::kit::gate::GatedPayload;
use actix_multipart::{Field, Multipart};
use actix_web::http::header;
use actix_web::{web, HttpRequest};
use futures_util::TryStreamExt;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

/// Largest form read into memory: a completion body, or the text fields of
/// a multipart form together (names and values).
pub(super) const FORM_LIMIT: usize = 64 * 1024;
/// Most parts of a multipart form besides its file: a form needs a handful.
const MAX_FORM_FIELDS: usize = 32;

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

/// The text fields of a multipart form, and what `on_file` made of its
/// first `file` part (other file parts are skipped).
pub(super) struct Form<T> {
    pub(super) fields: HashMap<String, String>,
    pub(super) file: Option<T>,
}

pub(super) async fn next_field(
    form: &mut Multipart,
    progress: &Progress,
) -> ChunkedResult<Option<Field>> {
    match progress.within(form.try_next()).await? {
        Err(err) => Err(RequestError::Multipart(err.to_string()).into()),
        Ok(field) => Ok(field),
    }
}

/// Reads a whole small field into `text`, within what the form may still
/// hold (`room`); `keep` false just drains it.
pub(super) async fn read_field(
    field: &mut Field,
    progress: &mut Progress,
    keep: bool,
    room: usize,
) -> ChunkedResult<Vec<u8>> {
    let mut text = Vec::new();
    while let Some(chunk) = progress.next(field).await? {
        if keep {
            if text.len() + chunk.len() > room {
                return Err(RequestError::FormTooLarge.into());
            }
            text.extend_from_slice(&chunk);
        }
    }
    Ok(text)
}

/// Reads a multipart form: its text fields, at most `MAX_FORM_FIELDS` of
/// them in `FORM_LIMIT` bytes together, and its first `file` part, which
/// `on_file` takes. The whole body is held to one progress rule: a form
/// that trickles field after field is cut off like a trickling file.
pub(super) async fn read_form<T, F, Fut>(
    mut form: Multipart,
    wait: Duration,
    mut on_file: F,
) -> ChunkedResult<Form<T>>
where
    F: FnMut(HashMap<String, String>, Field) -> Fut,
    Fut: Future<Output = ChunkedResult<T>>,
{
    let mut fields = HashMap::new();
    let (mut file, mut parts, mut held) = (None, 0, 0);
    let mut progress = Progress::new(wait);
    while let Some(mut field) = next_field(&mut form, &progress).await? {
        let name = field.name().unwrap_or("").to_owned();
        if name == "file" && file.is_none() {
            file = Some(on_file(fields.clone(), field).await?);
            // The file part is read under the engine's own progress rule.
            progress.restart();
            continue;
        }
        parts += 1;
        if parts > MAX_FORM_FIELDS {
            return Err(RequestError::Multipart(format!(
                "more than {MAX_FORM_FIELDS} fields besides the file"
            ))
            .into());
        }
        if field
            .content_disposition()
            .and_then(|cd| cd.get_filename())
            .is_some()
        {
            read_field(&mut field, &mut progress, false, 0).await?;
            continue;
        }
        let value = read_field(
            &mut field,
            &mut progress,
            true,
            FORM_LIMIT.saturating_sub(held),
        )
        .await?;
        held += name.len() + value.len();
        let value = String::from_utf8(value)
            .map_err(|_| RequestError::Multipart(format!("field {name:?} is not UTF-8")))?;
        fields.insert(name, value);
    }
    Ok(Form { fields, file })
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
