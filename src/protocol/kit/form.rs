//! Multipart forms as the adapters read them: the file part streamed to
//! whoever takes it, the other fields bounded and the whole form held to
//! one progress rule.

use crate::engine::{EngineError, Progress};
use actix_multipart::{Field, Multipart};
use futures_util::TryStreamExt;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

/// Largest form read into memory: the text fields of a multipart form
/// together (names and values), or a small form body.
pub const FORM_LIMIT: usize = 64 * 1024;
/// Most parts of a multipart form besides its file: a form needs a handful.
const MAX_FORM_FIELDS: usize = 32;

/// Why a form could not be read; each adapter says it in its own way.
#[derive(Debug, thiserror::Error)]
pub enum FormError {
    #[error("{0}")]
    Malformed(String),
    #[error("form fields larger than allowed")]
    TooLarge,
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The text fields of a multipart form, and what the taker of its files
/// made of them.
pub struct Form<T> {
    pub fields: HashMap<String, String>,
    pub files: Vec<T>,
}

async fn next_field(form: &mut Multipart, progress: &Progress) -> Result<Option<Field>, FormError> {
    progress
        .within(form.try_next())
        .await?
        .map_err(|err| FormError::Malformed(err.to_string()))
}

/// Reads a whole small field, within what the form may still hold
/// (`room`); `keep` false just drains it.
pub async fn read_field(
    field: &mut Field,
    progress: &mut Progress,
    keep: bool,
    room: usize,
) -> Result<Vec<u8>, FormError> {
    let mut text = Vec::new();
    while let Some(chunk) = progress.next(field).await? {
        if keep {
            if text.len() + chunk.len() > room {
                return Err(FormError::TooLarge);
            }
            text.extend_from_slice(&chunk);
        }
    }
    Ok(text)
}

/// Reads a multipart form: its text fields, at most `MAX_FORM_FIELDS` of
/// them in `FORM_LIMIT` bytes together, and the parts that `is_file` picks
/// (by the fields before them, their name, whether they have a filename,
/// and how many were picked before), which `on_file` takes with those
/// fields; other file parts are drained. The
/// whole body is held to one progress rule: a form that trickles field
/// after field is cut off like a trickling file.
pub async fn read_form<T, E, F, Fut>(
    mut form: Multipart,
    wait: Duration,
    is_file: impl Fn(&HashMap<String, String>, &str, bool, usize) -> bool,
    mut on_file: F,
) -> Result<Form<T>, E>
where
    E: From<FormError>,
    F: FnMut(HashMap<String, String>, Field) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut fields = HashMap::new();
    let (mut files, mut parts, mut held) = (Vec::new(), 0, 0);
    let mut progress = Progress::new(wait);
    while let Some(mut field) = next_field(&mut form, &progress).await? {
        let name = field.name().unwrap_or("").to_owned();
        let has_filename = field
            .content_disposition()
            .and_then(|cd| cd.get_filename())
            .is_some();
        if is_file(&fields, &name, has_filename, files.len()) {
            files.push(on_file(fields.clone(), field).await?);
            // The file part is read under the engine's own progress rule.
            progress.restart();
            continue;
        }
        parts += 1;
        if parts > MAX_FORM_FIELDS {
            let many = format!("more than {MAX_FORM_FIELDS} fields besides the file");
            return Err(FormError::Malformed(many).into());
        }
        if has_filename {
            read_field(&mut field, &mut progress, false, 0).await?;
            continue;
        }
        let room = FORM_LIMIT.saturating_sub(held);
        let value = read_field(&mut field, &mut progress, true, room).await?;
        held += name.len() + value.len();
        let value = String::from_utf8(value)
            .map_err(|_| FormError::Malformed(format!("field {name:?} is not UTF-8")))?;
        fields.insert(name, value);
    }
    Ok(Form { fields, files })
}
