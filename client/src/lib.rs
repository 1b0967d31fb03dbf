//! The client library behind `chunkup`: resumable uploads to chunkd (or any
//! server of the drf-chunked-upload protocol, or of tus 1.0), with retries,
//! resume state between runs, and progress reports.
//!
//! ```no_run
//! use chunkup_client::{push, Options, Source, Event};
//! let source = Source::open("build.tar".as_ref())?;
//! let outcome = push(&source, "https://up.example/upload/", &Options::default(), &|_: Event| {})?;
//! println!("{} ({})", outcome.url, outcome.md5);
//! # Ok::<(), chunkup_client::Error>(())
//! ```

mod chunked;
mod error;
mod http;
mod retry;
mod source;
mod state;
mod tus;

pub use error::{Error, Result};
pub use retry::RetryPolicy;
pub use source::Source;

use http::{Body, Http};
use retry::Backoff;
use serde::Serialize;
use state::StateFile;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// tus if the endpoint answers OPTIONS as a tus server, else chunked.
    Auto,
    Chunked,
    Tus,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub protocol: Protocol,
    /// Bytes per request.
    pub chunk_size: u64,
    /// Parts sent at once (tus concatenation); 1 sends one stream.
    pub parallel: usize,
    pub token: Option<String>,
    pub retry: RetryPolicy,
    /// How long a connection may stay silent.
    pub timeout: Duration,
    /// Where resume state is kept; `None` keeps none.
    pub state_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            protocol: Protocol::Auto,
            chunk_size: 8 << 20,
            parallel: 1,
            token: None,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(60),
            state_dir: Some(state::default_dir()),
        }
    }
}

/// What happens during a push, for progress displays.
#[derive(Debug)]
pub enum Event<'a> {
    /// The upload exists on the server: new, or resumed at `offset`.
    Started {
        url: &'a str,
        total: Option<u64>,
        offset: u64,
    },
    /// Bytes sent so far (acknowledged, plus the request in flight).
    Progress { done: u64, total: Option<u64> },
    /// An attempt failed; the next one starts after `delay`.
    Retrying {
        error: &'a Error,
        delay: Duration,
        attempt: u32,
    },
    /// The server no longer has the upload; it starts again from byte 0.
    Restarting { reason: &'a Error },
}

/// Told of each [`Event`]; called from several threads with `parallel`.
pub trait Observer: Sync {
    fn event(&self, event: Event<'_>);
}

impl<F: Fn(Event<'_>) + Sync> Observer for F {
    fn event(&self, event: Event<'_>) {
        self(event)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The finished upload.
    pub url: String,
    pub protocol: Protocol,
    pub size: u64,
    /// MD5 of the bytes sent, hex.
    pub md5: String,
    /// Where this run started (0 unless it resumed an earlier one).
    pub resumed_from: u64,
    pub retries: u32,
    pub parts: usize,
}

/// An upload as the server reports it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub url: String,
    pub protocol: Protocol,
    pub offset: u64,
    pub total: Option<u64>,
    pub complete: bool,
    /// The server's checksum of a completed upload (chunked protocol).
    pub md5: Option<String>,
    pub expires: Option<String>,
}

/// Uploads `source` to `endpoint` (`…/upload/` or a tus `…/files/`),
/// resuming what an earlier run of the same file to the same endpoint left.
pub fn push(
    source: &Source,
    endpoint: &str,
    options: &Options,
    observer: &dyn Observer,
) -> Result<Outcome> {
    if options.chunk_size == 0 || options.parallel == 0 {
        return Err(Error::Usage(
            "the chunk size and the number of parts must be above 0".into(),
        ));
    }
    let run = Run::new(options, observer);
    // One OPTIONS both tells auto-detection what the endpoint speaks and
    // gives tus its capabilities.
    let capabilities = match options.protocol {
        Protocol::Chunked => None,
        _ => {
            let mut backoff = Backoff::new(&options.retry);
            run.retrying(&mut backoff, || tus::capabilities(&run, endpoint))?
        }
    };
    let protocol = match (options.protocol, &capabilities) {
        (Protocol::Auto, Some(_)) => Protocol::Tus,
        (Protocol::Auto, None) => Protocol::Chunked,
        (chosen, _) => chosen,
    };
    if options.parallel > 1 && protocol != Protocol::Tus {
        return Err(Error::Usage(
            "--parallel needs a tus endpoint (concatenation)".into(),
        ));
    }
    let state = match (&options.state_dir, source.identity()) {
        (Some(dir), Some(identity)) => Some(StateFile::new(
            dir,
            &format!("{identity}\0{endpoint}\0{protocol:?}\0{}", options.parallel),
        )),
        _ => None,
    };
    let mut outcome = match protocol {
        Protocol::Tus => {
            let capabilities = capabilities
                .ok_or_else(|| Error::Usage(format!("{endpoint} is not a tus endpoint")))?;
            tus::push(&run, source, endpoint, state.as_ref(), capabilities)?
        }
        _ => chunked::push(&run, source, endpoint, state.as_ref())?,
    };
    if let Some(state) = &state {
        state.remove();
    }
    outcome.retries = run.retried.load(Ordering::Relaxed);
    Ok(outcome)
}

/// Where an upload stands, from its URL.
pub fn status(url: &str, options: &Options) -> Result<Status> {
    let run = Run::new(options, &|_: Event| {});
    let mut backoff = Backoff::new(&options.retry);
    if options.protocol != Protocol::Chunked {
        if let Some(status) = run.retrying(&mut backoff, || tus::status(&run, url))? {
            return Ok(status);
        }
        if options.protocol == Protocol::Tus {
            return Err(Error::Protocol(format!("{url} is not a tus upload")));
        }
    }
    run.retrying(&mut backoff, || chunked::status(&run, url))
}

/// Removes an upload from the server, and any resume state that names it.
pub fn abort(url: &str, options: &Options) -> Result<()> {
    let run = Run::new(options, &|_: Event| {});
    let mut backoff = Backoff::new(&options.retry);
    run.retrying(&mut backoff, || {
        let reply = run.http.call(
            "DELETE",
            url,
            &[("Tus-Resumable", tus::VERSION)],
            Body::Empty,
        )?;
        match reply.status {
            200 | 204 => Ok(()),
            _ => Err(reply.error()),
        }
    })?;
    if let Some(dir) = &options.state_dir {
        state::forget_url(dir, url);
    }
    Ok(())
}

/// What one push shares between its protocol, its parts and its threads.
pub(crate) struct Run<'a> {
    http: Http,
    options: &'a Options,
    observer: &'a dyn Observer,
    /// Bytes of each part sent so far, and the total once known.
    sent: Vec<AtomicU64>,
    total: AtomicU64,
    retried: AtomicU32,
}

const UNKNOWN: u64 = u64::MAX;

impl<'a> Run<'a> {
    fn new(options: &'a Options, observer: &'a dyn Observer) -> Self {
        Run {
            http: Http::new(options.token.as_deref(), options.timeout),
            options,
            observer,
            sent: (0..options.parallel).map(|_| AtomicU64::new(0)).collect(),
            total: AtomicU64::new(UNKNOWN),
            retried: AtomicU32::new(0),
        }
    }

    fn total(&self) -> Option<u64> {
        Some(self.total.load(Ordering::Relaxed)).filter(|&t| t != UNKNOWN)
    }

    fn started(&self, url: &str, total: Option<u64>, offset: u64) {
        self.total
            .store(total.unwrap_or(UNKNOWN), Ordering::Relaxed);
        self.observer.event(Event::Started { url, total, offset });
    }

    fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    /// Part `part` has `bytes` sent (after an answer or a resync).
    fn set_sent(&self, part: usize, bytes: u64) {
        self.sent[part].store(bytes, Ordering::Relaxed);
        self.report();
    }

    fn add_sent(&self, part: usize, bytes: u64) {
        self.sent[part].fetch_add(bytes, Ordering::Relaxed);
        self.report();
    }

    fn report(&self) {
        let done = self.sent.iter().map(|s| s.load(Ordering::Relaxed)).sum();
        self.observer.event(Event::Progress {
            done,
            total: self.total(),
        });
    }

    /// Waits out a failure under `backoff`, or gives it back.
    fn failed(&self, backoff: &mut Backoff, err: Error) -> Result<()> {
        backoff.failed(err, |error, delay, attempt| {
            self.retried.fetch_add(1, Ordering::Relaxed);
            self.observer.event(Event::Retrying {
                error,
                delay,
                attempt,
            });
        })
    }

    /// `upload` again from the start if the server lost the upload
    /// (expired, aborted), once per run: a second loss is an error.
    fn restarting_once(
        &self,
        state: Option<&StateFile>,
        mut upload: impl FnMut() -> Result<Outcome>,
    ) -> Result<Outcome> {
        match upload() {
            Err(reason @ Error::Gone { .. }) => {
                self.observer.event(Event::Restarting { reason: &reason });
                if let Some(state) = state {
                    state.remove();
                }
                upload()
            }
            other => other,
        }
    }

    /// `attempt` until it succeeds or fails in a way not worth retrying.
    fn retrying<T>(
        &self,
        backoff: &mut Backoff,
        mut attempt: impl FnMut() -> Result<T>,
    ) -> Result<T> {
        loop {
            match attempt() {
                Ok(value) => {
                    backoff.progressed();
                    return Ok(value);
                }
                Err(err) => self.failed(backoff, err)?,
            }
        }
    }
}

/// A request body that counts what goes out for the progress report.
struct Counted<'r, 'a, R> {
    inner: R,
    run: &'r Run<'a>,
    part: usize,
}

impl<R: Read> Read for Counted<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.run.add_sent(self.part, n as u64);
        Ok(n)
    }
}
