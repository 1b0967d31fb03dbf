//! tus 1.0: creation (`Upload-Defer-Length` for standard input), `PATCH`
//! with a per-chunk `Upload-Checksum` when the server takes MD5 (a chunk
//! damaged on the way is refused and sent again), `HEAD` to learn the offset
//! after a failure, and concatenation for `--parallel`.

use crate::error::{Error, Result};
use crate::http::{resolve, Body, Reply};
use crate::retry::Backoff;
use crate::source::{FileDigest, Hashing, Source};
use crate::state::{Saved, StateFile};
use crate::{Counted, Outcome, Protocol, Run, Status};
use base64::prelude::{Engine, BASE64_STANDARD};
use chunkd_md5::Md5;

pub(crate) const VERSION: &str = "1.0.0";

/// What a tus server says it can do.
pub(crate) struct Capabilities {
    extensions: Vec<String>,
    md5_checksums: bool,
}

impl Capabilities {
    fn has(&self, extension: &str) -> bool {
        self.extensions.iter().any(|e| e == extension)
    }
}

/// `OPTIONS` of the endpoint: `None` when it does not speak tus.
pub(crate) fn capabilities(run: &Run, endpoint: &str) -> Result<Option<Capabilities>> {
    let reply = run.http.call(
        "OPTIONS",
        endpoint,
        &[("Tus-Resumable", VERSION)],
        Body::Empty,
    )?;
    if reply.status >= 500 {
        return Err(reply.error());
    }
    let Some(versions) = reply.header("Tus-Version") else {
        return Ok(None);
    };
    if !versions.split(',').any(|v| v.trim() == VERSION) {
        return Err(Error::Usage(format!(
            "{endpoint} speaks tus {versions}, not {VERSION}"
        )));
    }
    let list = |name| -> Vec<String> {
        reply
            .header(name)
            .unwrap_or("")
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect()
    };
    Ok(Some(Capabilities {
        extensions: list("Tus-Extension"),
        md5_checksums: list("Tus-Checksum-Algorithm").iter().any(|a| a == "md5"),
    }))
}

pub(crate) fn push(
    run: &Run,
    source: &Source,
    endpoint: &str,
    state: Option<&StateFile>,
    caps: Capabilities,
) -> Result<Outcome> {
    let mut backoff = Backoff::new(&run.options.retry);
    if !caps.has("creation") {
        return Err(Error::Usage(format!(
            "{endpoint} cannot create uploads (no tus creation extension)"
        )));
    }
    let tus = Tus {
        run,
        source,
        endpoint,
        state,
        caps,
    };
    run.restarting_once(state, || {
        if run.options.parallel > 1 {
            tus.parallel(&mut backoff)
        } else {
            tus.single(&mut backoff)
        }
    })
}

struct Tus<'r, 'a> {
    run: &'r Run<'a>,
    source: &'r Source,
    endpoint: &'r str,
    state: Option<&'r StateFile>,
    caps: Capabilities,
}

/// One upload on the server holding `start..end` of the source (`end`
/// unknown while standard input still runs).
struct Part<'u> {
    url: &'u str,
    index: usize,
    start: u64,
    end: Option<u64>,
}

/// What a creation `POST` makes.
enum Creation<'u> {
    /// One upload of the whole source: its length, or `None` to tell it later.
    Whole(Option<u64>),
    /// A part of a parallel upload, of this length.
    Part(u64),
    /// The upload made of these parts.
    Concatenation(&'u [String]),
}

/// An upload's state from `HEAD`.
struct Head {
    offset: u64,
    length: Option<u64>,
}

impl Tus<'_, '_> {
    fn single(&self, backoff: &mut Backoff) -> Result<Outcome> {
        let run = self.run;
        let chunk = run.options.chunk_size;
        // Knowing whether standard input fits one chunk spares a deferred length.
        self.source.fill_to(chunk)?;
        if self.source.size().is_none() && !self.caps.has("creation-defer-length") {
            self.source.fill_to(u64::MAX)?;
        }
        let size = self.source.size();
        let saved = self.state.and_then(StateFile::load);
        let (url, head) = match saved.and_then(|s| s.uploads.into_iter().next()) {
            Some(url) => {
                let head = run.retrying(backoff, || self.head(&url))?;
                if head.length.is_some() && head.length != size {
                    return Err(Error::Gone {
                        status: 409,
                        message: format!("{url} has another length than the file"),
                    });
                }
                (url, head)
            }
            None => {
                let url = run
                    .retrying(backoff, || self.create(Creation::Whole(size)))
                    .and_then(|url| {
                        if let Some(state) = self.state {
                            state.save(&Saved {
                                uploads: vec![url.clone()],
                                concatenated: None,
                            })?;
                        }
                        Ok(url)
                    })?;
                let head = Head {
                    offset: 0,
                    length: size,
                };
                (url, head)
            }
        };
        run.started(&url, size, head.offset);
        let resumed_from = head.offset;
        let mut digest = FileDigest::new();
        let part = Part {
            url: &url,
            index: 0,
            start: 0,
            end: size,
        };
        let length = self.send(&part, head, Some(&mut digest), backoff)?;
        digest.advance_to(self.source, length)?;
        Ok(Outcome {
            url,
            protocol: Protocol::Tus,
            size: length,
            md5: digest.hex(),
            resumed_from,
            retries: 0,
            parts: 1,
        })
    }

    fn parallel(&self, backoff: &mut Backoff) -> Result<Outcome> {
        let run = self.run;
        if !self.caps.has("concatenation") {
            return Err(Error::Usage(format!(
                "{} cannot concatenate uploads, so --parallel does not work with it",
                self.endpoint
            )));
        }
        // Parts need their bounds up front: standard input is spooled whole.
        let size = self.source.fill_to(u64::MAX)?;
        let count = run.options.parallel as u64;
        let bounds: Vec<(u64, u64)> = (0..count)
            .map(|i| (size * i / count, size * (i + 1) / count))
            .collect();
        let saved = self.state.and_then(StateFile::load);
        if let Some(url) = saved.as_ref().and_then(|s| s.concatenated.clone()) {
            let head = run.retrying(backoff, || self.head(&url))?;
            if head.length == Some(size) && head.offset == size {
                return self.parallel_outcome(url, size, size);
            }
        }
        let urls = match saved {
            Some(saved) if saved.uploads.len() == bounds.len() => saved.uploads,
            _ => {
                let mut urls = Vec::new();
                for (start, end) in &bounds {
                    urls.push(run.retrying(backoff, || self.create(Creation::Part(end - start)))?);
                }
                if let Some(state) = self.state {
                    state.save(&Saved {
                        uploads: urls.clone(),
                        concatenated: None,
                    })?;
                }
                urls
            }
        };
        let mut heads = Vec::new();
        for url in &urls {
            heads.push(run.retrying(backoff, || self.head(url))?);
        }
        let resumed_from = heads.iter().map(|h| h.offset).sum();
        run.started(self.endpoint, Some(size), resumed_from);
        let results: Vec<Result<u64>> = std::thread::scope(|scope| {
            let threads: Vec<_> = urls
                .iter()
                .zip(heads)
                .zip(&bounds)
                .enumerate()
                .map(|(index, ((url, head), &(start, end)))| {
                    scope.spawn(move || {
                        let mut backoff = Backoff::new(&run.options.retry);
                        let part = Part {
                            url,
                            index,
                            start,
                            end: Some(end),
                        };
                        self.send(&part, head, None, &mut backoff)
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("a part's thread panicked"))
                .collect()
        });
        for result in results {
            result?;
        }
        let url = run.retrying(backoff, || self.create(Creation::Concatenation(&urls)))?;
        if let Some(state) = self.state {
            state.save(&Saved {
                uploads: urls.clone(),
                concatenated: Some(url.clone()),
            })?;
        }
        self.parallel_outcome(url, size, resumed_from)
    }

    fn parallel_outcome(&self, url: String, size: u64, resumed_from: u64) -> Result<Outcome> {
        let mut digest = FileDigest::new();
        digest.advance_to(self.source, size)?;
        Ok(Outcome {
            url,
            protocol: Protocol::Tus,
            size,
            md5: digest.hex(),
            resumed_from,
            retries: 0,
            parts: self.run.options.parallel,
        })
    }

    /// `POST` of a new upload; answers its URL.
    fn create(&self, kind: Creation) -> Result<String> {
        let metadata = format!(
            "filename {}",
            BASE64_STANDARD.encode(self.source.name().as_bytes())
        );
        let (length, concat) = match &kind {
            Creation::Whole(length) => (length.map(|l| l.to_string()), None),
            Creation::Part(length) => (Some(length.to_string()), Some("partial".to_owned())),
            Creation::Concatenation(parts) => (None, Some(format!("final;{}", parts.join(" ")))),
        };
        let mut headers = vec![("Tus-Resumable", VERSION)];
        match (&length, &kind) {
            (Some(length), _) => headers.push(("Upload-Length", length)),
            (None, Creation::Whole(None)) => headers.push(("Upload-Defer-Length", "1")),
            // A concatenation's length is the sum of its parts'.
            (None, _) => {}
        }
        if let Some(concat) = &concat {
            headers.push(("Upload-Concat", concat));
        }
        // The name goes with what the user sees: the upload, not its parts.
        if !matches!(kind, Creation::Part(_)) {
            headers.push(("Upload-Metadata", &metadata));
        }
        let reply = self
            .run
            .http
            .call("POST", self.endpoint, &headers, Body::Empty)?;
        match reply.status {
            200 | 201 => {
                let location = reply.header("Location").ok_or_else(|| {
                    Error::Protocol("the new upload's answer has no Location".into())
                })?;
                Ok(resolve(self.endpoint, location))
            }
            // A part gone before the concatenation: start again.
            _ if matches!(kind, Creation::Concatenation(_)) => Err(reply.error()),
            _ => Err(reply.endpoint_error()),
        }
    }

    fn head(&self, url: &str) -> Result<Head> {
        let reply = self
            .run
            .http
            .call("HEAD", url, &[("Tus-Resumable", VERSION)], Body::Empty)?;
        match reply.status {
            200 | 204 => head(&reply),
            // A HEAD answer has no body: the status tells it all.
            _ => Err(reply.error()),
        }
    }

    /// Sends the rest of `part` from `head`'s offset; answers its length.
    /// `digest`, when given, follows the acknowledged offset.
    fn send(
        &self,
        part: &Part,
        mut head: Head,
        mut digest: Option<&mut FileDigest>,
        backoff: &mut Backoff,
    ) -> Result<u64> {
        let run = self.run;
        loop {
            let start = part.start + head.offset;
            let want = start + run.options.chunk_size;
            let end = match part.end {
                Some(end) => end.min(want),
                None => self.source.fill_to(want)?,
            };
            if end < start {
                return Err(Error::Protocol(format!(
                    "{} reports offset {}, past the end of the bytes it is for",
                    part.url, head.offset
                )));
            }
            // The length is told with the chunk that reaches the end of
            // standard input, as creation-defer-length wants.
            let length = match (head.length, self.source.size()) {
                (Some(_), _) => None,
                (None, Some(size)) if end == size => {
                    run.set_total(size);
                    Some(size - part.start)
                }
                (None, _) => None,
            };
            run.set_sent(part.index, head.offset);
            if end == start && length.is_none() {
                if head.length == Some(head.offset) {
                    return Ok(head.offset);
                }
                return Err(Error::Protocol(format!(
                    "{} wants more bytes than the file has",
                    part.url
                )));
            }
            // The whole-file MD5 goes on from the acknowledged offset (parts
            // of a parallel upload have none).
            let mut md5 = match &mut digest {
                Some(digest) => {
                    digest.advance_to(self.source, start)?;
                    Some(digest.state())
                }
                None => None,
            };
            let answer = self.patch(part, head.offset, start, end, length, md5.as_mut());
            match answer {
                Ok(offset) => {
                    if let (Some(digest), Some(md5)) = (&mut digest, md5) {
                        if part.start + offset == end {
                            **digest = FileDigest::advanced(md5, end);
                        }
                    }
                    head.offset = offset;
                    head.length = head.length.or(length);
                    backoff.progressed();
                }
                Err(err) => {
                    run.failed(backoff, err)?;
                    head = run.retrying(backoff, || self.head(part.url))?;
                }
            }
            if head.length == Some(head.offset) {
                run.set_sent(part.index, head.offset);
                return Ok(head.offset);
            }
        }
    }

    /// `PATCH` of `start..end` at `offset` of the upload; answers the new offset.
    fn patch(
        &self,
        part: &Part,
        offset: u64,
        start: u64,
        end: u64,
        length: Option<u64>,
        mut md5: Option<&mut Md5>,
    ) -> Result<u64> {
        // A checksum goes in a header, before the body: the chunk is read
        // once for it (carrying the whole-file MD5 along), then sent.
        // Without one, the chunk is hashed as it is sent.
        let checksum = match self.caps.md5_checksums {
            true => {
                let digest = self.source.md5_of(start, end, md5.take())?;
                Some(format!("md5 {}", BASE64_STANDARD.encode(digest)))
            }
            false => None,
        };
        let offset_text = offset.to_string();
        let length_text = length.map(|l| l.to_string());
        let mut headers = vec![
            ("Tus-Resumable", VERSION),
            ("Upload-Offset", offset_text.as_str()),
            ("Content-Type", "application/offset+octet-stream"),
        ];
        if let Some(checksum) = &checksum {
            headers.push(("Upload-Checksum", checksum));
        }
        if let Some(length) = &length_text {
            headers.push(("Upload-Length", length));
        }
        let mut body = Counted {
            inner: Hashing {
                inner: self.source.range(start, end),
                md5,
            },
            run: self.run,
            part: part.index,
        };
        let reply = self.run.http.call(
            "PATCH",
            part.url,
            &headers,
            Body::Reader {
                reader: &mut body,
                len: end - start,
            },
        )?;
        match reply.status {
            200 | 204 => reply.header_u64("Upload-Offset"),
            // Offset mismatch: the HEAD after this failure tells the truth.
            409 => Err(Error::Transient(format!(
                "offset {offset} does not match the server's"
            ))),
            460 => Err(Error::Transient(
                "the chunk arrived damaged (checksum mismatch)".into(),
            )),
            _ => Err(reply.error()),
        }
    }
}

fn head(reply: &Reply) -> Result<Head> {
    Ok(Head {
        offset: reply.header_u64("Upload-Offset")?,
        length: reply
            .header("Upload-Length")
            .and_then(|l| l.trim().parse().ok()),
    })
}

/// `HEAD` of an upload URL: `None` when it is not a tus upload.
pub(crate) fn status(run: &Run, url: &str) -> Result<Option<Status>> {
    let reply = run
        .http
        .call("HEAD", url, &[("Tus-Resumable", VERSION)], Body::Empty)?;
    if reply.header("Upload-Offset").is_none() {
        return match reply.status {
            200 | 204 | 404 | 405 => Ok(None),
            _ => Err(reply.error()),
        };
    }
    let state = head(&reply)?;
    Ok(Some(Status {
        url: url.to_owned(),
        protocol: Protocol::Tus,
        offset: state.offset,
        total: state.length,
        complete: state.length == Some(state.offset),
        md5: None,
        expires: reply.header("Upload-Expires").map(str::to_owned),
    }))
}
