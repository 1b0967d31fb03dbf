//! Delivering what happened to uploads: the outbox's events, posted to the
//! application's webhook, signed, at least once and in order per upload,
//! from a thread of their own; several processes share the work through
//! the outbox's claims. The sweep drops events nobody delivered within
//! their retention, so that an outbox without a webhook stays small.

use super::checksum::to_hex;
use super::hook::application_agent;
use super::EngineMetrics;
use crate::meta::{MetaResult, Outbox, UploadEvent};
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;

/// Where events go, and the key their signatures are made with.
pub struct Webhook {
    pub url: String,
    pub secret: String,
}

/// Events one claim takes; all are posted before the claim runs out.
const BATCH: u32 = 8;
/// How long one post may take, connection included.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a claim holds: longer than posting a whole batch.
const CLAIM_FOR: chrono::TimeDelta = chrono::TimeDelta::seconds(120);
/// How often an idle deliverer looks for new events.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// The longest wait between two tries of one event.
const MAX_BACKOFF_SECS: u64 = 3600;

pub struct EventDelivery {
    outbox: Arc<dyn Outbox>,
    webhook: Webhook,
    agent: ureq::Agent,
    metrics: EngineMetrics,
}

impl EventDelivery {
    pub fn new(outbox: Arc<dyn Outbox>, webhook: Webhook, metrics: EngineMetrics) -> Self {
        EventDelivery {
            outbox,
            webhook,
            agent: application_agent(POST_TIMEOUT),
            metrics,
        }
    }

    /// Runs for the life of the process, on a thread of its own: posting
    /// and the database calls around it block.
    pub fn spawn(self) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("chunkd-events".into())
            .spawn(move || loop {
                if self.deliver_due() == 0 {
                    std::thread::sleep(POLL_EVERY);
                }
            })
            .map(drop)
    }

    /// Posts the events due now; returns how many it claimed.
    fn deliver_due(&self) -> usize {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let now = Utc::now();
        let events = match self
            .outbox
            .claim_events(&token, now, now + CLAIM_FOR, BATCH)
        {
            Ok(events) => events,
            Err(err) => {
                log::warn!("events: cannot claim: {err}");
                return 0;
            }
        };
        for event in &events {
            let settled = match post(&self.webhook, &self.agent, event) {
                Ok(()) => {
                    self.metrics.events_delivered.inc();
                    self.outbox.remove_event(event.seq, &token)
                }
                Err(reason) => {
                    self.metrics.event_deliveries_failed.inc();
                    log::warn!(
                        "event {} of upload {}: delivery {} failed: {reason}",
                        event.kind,
                        event.upload_id,
                        event.attempts + 1
                    );
                    self.outbox
                        .retry_event(event.seq, &token, Utc::now() + backoff(event.attempts))
                }
            };
            if let Err(err) = settled {
                // The claim runs out and the event is tried again.
                log::warn!("event {} of upload {}: {err}", event.kind, event.upload_id);
            }
        }
        events.len()
    }
}

/// Drops the events that happened more than `retention` ago, delivered or
/// not; returns how many.
pub fn drop_old_events(
    outbox: &dyn Outbox,
    retention: Duration,
    metrics: &EngineMetrics,
) -> MetaResult<u64> {
    let age = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let before = Utc::now()
        .checked_sub_signed(age)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let dropped = outbox.remove_events_before(before)?;
    metrics.events_dropped.inc_by(dropped);
    Ok(dropped)
}

/// The wait before the next try of an event tried `attempts` times: 1 s,
/// doubling, up to an hour.
fn backoff(attempts: u32) -> chrono::Duration {
    let secs = 1u64
        .checked_shl(attempts)
        .unwrap_or(u64::MAX)
        .min(MAX_BACKOFF_SECS);
    chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// The key a receiver recognises a repeated delivery by: an upload has
/// each kind of event once at most.
fn idempotency_key(event: &UploadEvent) -> String {
    format!("{}.{}", event.upload_id, event.kind)
}

/// What the webhook receives.
fn body(event: &UploadEvent) -> Vec<u8> {
    let time = |at: DateTime<Utc>| at.to_rfc3339_opts(SecondsFormat::Micros, true);
    json!({
        "id": idempotency_key(event),
        "event": event.kind,
        "at": time(event.happened_at),
        "upload": {
            "id": event.upload_id,
            "owner": event.owner,
            "filename": event.filename,
            "total": event.total,
            "offset": event.offset,
            "checksum": event.checksum,
            "metadata": event.metadata,
        },
    })
    .to_string()
    .into_bytes()
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", to_hex(&mac.finalize().into_bytes()))
}

/// One try: a 2xx answer delivers the event; anything else is retried.
fn post(hook: &Webhook, agent: &ureq::Agent, event: &UploadEvent) -> Result<(), String> {
    let body = body(event);
    let answer = agent
        .post(&hook.url)
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", idempotency_key(event))
        .header("Chunkd-Event", &event.kind)
        .header("Chunkd-Signature", signature(hook.secret.as_bytes(), &body))
        .send(&body[..])
        .map_err(|err| err.to_string())?;
    let status = answer.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}
