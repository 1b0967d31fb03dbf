//! The application's say on new uploads (`--hook-url`): before an upload is
//! recorded, chunkd posts what it knows of it, and the application accepts
//! it (a 2xx answer, which may attach metadata), or refuses it with its own
//! 4xx status and message for the client. A hook that does not answer, or
//! answers otherwise, refuses it with 503: new uploads wait for the
//! application rather than pass unchecked.

use super::error::{EngineError, EngineResult};
use super::{run_blocking, Caller, Engine, NewUpload};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

/// How long the application may take to answer.
const HOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of an answer read: metadata to attach fits well within it.
const MAX_ANSWER: u64 = 64 * 1024;
/// The most of a refusal's message passed on to the client, in bytes.
const MAX_MESSAGE: usize = 1024;

pub struct PreCreateHook {
    url: String,
    agent: ureq::Agent,
}

/// What a 2xx answer may carry.
#[derive(Deserialize, Default)]
struct Accepted {
    /// Pairs to attach to the upload's metadata (replacing the client's
    /// of the same key).
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

impl PreCreateHook {
    pub fn new(url: String) -> Self {
        PreCreateHook {
            url,
            agent: application_agent(HOOK_TIMEOUT),
        }
    }

    /// Asks about `new` of `owner` (its size `total`, when known); returns
    /// its metadata as the application leaves it.
    fn ask(
        &self,
        owner: Option<&str>,
        new: &NewUpload,
        total: Option<u64>,
    ) -> EngineResult<Option<String>> {
        let unavailable = |why: String| {
            log::warn!("pre-create hook {}: {why}", self.url);
            EngineError::Refused {
                status: 503,
                message: "the application did not answer about this upload; try again later".into(),
            }
        };
        let body = json!({
            "owner": owner,
            "filename": new.filename,
            "total": total,
            "metadata": new.metadata,
        });
        let mut answer = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .map_err(|err| unavailable(err.to_string()))?;
        let status = answer.status().as_u16();
        let mut text = String::new();
        answer
            .body_mut()
            .as_reader()
            .take(MAX_ANSWER)
            .read_to_string(&mut text)
            .map_err(|err| unavailable(err.to_string()))?;
        match status {
            200..=299 => {
                let accepted: Accepted = if text.trim().is_empty() {
                    Accepted::default()
                } else {
                    serde_json::from_str(&text).map_err(|err| {
                        unavailable(format!("answer is not the JSON expected: {err}"))
                    })?
                };
                with_metadata(new.metadata.as_deref(), &accepted.metadata).map_err(&unavailable)
            }
            400..=499 => Err(EngineError::Refused {
                status,
                message: first_bytes(text.trim(), MAX_MESSAGE).to_owned(),
            }),
            _ => Err(unavailable(format!("answered {status}"))),
        }
    }
}

/// The client of chunkd's calls to the application (its hook, its
/// webhook): statuses are answers, not errors, redirects are not followed,
/// and each call, connection included, takes `timeout` at most.
pub(super) fn application_agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("chunkd/", env!("CARGO_PKG_VERSION")))
        .timeout_global(Some(timeout))
        .build()
        .new_agent()
}

/// The longest start of `text` of at most `max` bytes that ends on a
/// character.
fn first_bytes(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// tus metadata (`key base64,…`) with `pairs` set in it.
fn with_metadata(
    metadata: Option<&str>,
    pairs: &BTreeMap<String, String>,
) -> Result<Option<String>, String> {
    if pairs.is_empty() {
        return Ok(metadata.map(str::to_owned));
    }
    let mut merged: Vec<String> = metadata
        .into_iter()
        .flat_map(|text| text.split(','))
        .filter(|pair| {
            let key = pair.trim().split(' ').next().unwrap_or("");
            !key.is_empty() && !pairs.contains_key(key)
        })
        .map(|pair| pair.trim().to_owned())
        .collect();
    for (key, value) in pairs {
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(format!("metadata key {key:?} is not a tus metadata key"));
        }
        // A key alone is a pair without a value, as tus writes it.
        merged.push(if value.is_empty() {
            key.clone()
        } else {
            format!(
                "{key} {}",
                base64::engine::general_purpose::STANDARD.encode(value)
            )
        });
    }
    Ok(Some(merged.join(",")))
}

impl Engine {
    /// Whether `new`, of `total` bytes when known, may be recorded for
    /// `caller`: its name, the caller's token, and the application's hook,
    /// which may attach metadata to it.
    pub(super) async fn admit(
        &self,
        caller: &Caller,
        new: &mut NewUpload,
        total: Option<u64>,
    ) -> EngineResult<()> {
        let name = (!new.named_later).then_some(new.filename.as_str());
        if let Some(name) = name {
            self.check_filename(name)?;
        }
        Self::check_grant(caller, total, name)?;
        let Some(hook) = self.hook.clone() else {
            return Ok(());
        };
        let (owner, asked) = (caller.owner().map(str::to_owned), new.clone());
        new.metadata = run_blocking(move || hook.ask(owner.as_deref(), &asked, total)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_applications_pairs_replace_the_clients() {
        let pairs = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(
            with_metadata(
                Some("filename YS50eHQ=,project bWluZQ==,flag"),
                &pairs(&[("project", "apollo")])
            ),
            Ok(Some("filename YS50eHQ=,flag,project YXBvbGxv".into()))
        );
        assert_eq!(
            with_metadata(None, &pairs(&[("b", ""), ("a", "x")])),
            Ok(Some("a eA==,b".into()))
        );
        assert_eq!(
            with_metadata(Some("k dg=="), &pairs(&[])),
            Ok(Some("k dg==".into()))
        );
        assert_eq!(with_metadata(None, &pairs(&[])), Ok(None));
        for bad in ["", "two words", "a,b", "é"] {
            assert!(
                with_metadata(None, &pairs(&[(bad, "v")])).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_message_is_cut_on_a_character() {
        assert_eq!(first_bytes("héllo", 2), "h");
        assert_eq!(first_bytes("héllo", 3), "hé");
        assert_eq!(first_bytes("hi", 1024), "hi");
    }
}
