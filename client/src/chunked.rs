//! The drf-chunked-upload protocol: `PUT` chunks with `Content-Range` as
//! multipart forms (what every server of the protocol accepts), then `POST`
//! the MD5. The total must be known first, so standard input is spooled whole.

use crate::error::{Error, Result};
use crate::http::{Body, Reply};
use crate::retry::Backoff;
use crate::source::{random_u64, FileDigest, Hashing, Source};
use crate::state::{Saved, StateFile};
use crate::{Counted, Outcome, Protocol, Run, Status};
use std::io::Read;

pub(crate) fn push(
    run: &Run,
    source: &Source,
    endpoint: &str,
    state: Option<&StateFile>,
) -> Result<Outcome> {
    let size = source.fill_to(u64::MAX)?;
    let mut backoff = Backoff::new(&run.options.retry);
    let mut digest = FileDigest::new();
    let upload = Upload {
        run,
        source,
        endpoint,
        state,
        size,
    };
    run.restarting_once(state, || upload.send(&mut backoff, &mut digest))
}

struct Upload<'r, 'a> {
    run: &'r Run<'a>,
    source: &'r Source,
    endpoint: &'r str,
    state: Option<&'r StateFile>,
    size: u64,
}

/// The upload JSON fields a client needs.
struct Info {
    url: Option<String>,
    offset: u64,
    total: Option<u64>,
    complete: bool,
    md5: Option<String>,
    expires: Option<String>,
}

impl Upload<'_, '_> {
    fn send(&self, backoff: &mut Backoff, digest: &mut FileDigest) -> Result<Outcome> {
        let run = self.run;
        if self.size == 0 {
            return self.whole(backoff, digest);
        }
        let saved = self.state.and_then(StateFile::load);
        let mut url = saved.and_then(|s| s.uploads.into_iter().next());
        let mut offset = 0;
        if let Some(known) = &url {
            let info = run.retrying(backoff, || self.info(known))?;
            if info.complete {
                return self.verified(info, digest, 0);
            }
            offset = info.offset;
        }
        let resumed_from = offset;
        run.started(
            url.as_deref().unwrap_or(self.endpoint),
            Some(self.size),
            offset,
        );
        loop {
            while offset < self.size {
                let end = (offset + run.options.chunk_size).min(self.size);
                digest.advance_to(self.source, offset)?;
                let mut md5 = digest.state();
                run.set_sent(0, offset);
                let answer = self.put(url.as_deref(), offset, end, &mut md5);
                match answer {
                    Ok(Put::Stored(info)) => {
                        if url.is_none() {
                            let created = info.url.clone().ok_or_else(|| {
                                Error::Protocol("the new upload's JSON has no url".into())
                            })?;
                            if let Some(state) = self.state {
                                state.save(&Saved {
                                    uploads: vec![created.clone()],
                                    concatenated: None,
                                })?;
                            }
                            url = Some(created);
                        }
                        if info.offset == end {
                            *digest = FileDigest::advanced(md5, end);
                        }
                        offset = info.offset;
                        backoff.progressed();
                    }
                    // An earlier attempt arrived after all, or the server
                    // has less than it had: go on from where it is.
                    Ok(Put::Elsewhere(expected)) if expected != offset && expected <= self.size => {
                        offset = expected;
                    }
                    Ok(Put::Elsewhere(expected)) => {
                        return Err(Error::Protocol(format!(
                            "the server expects offset {expected} of {} bytes",
                            self.size
                        )));
                    }
                    Err(err) => {
                        run.failed(backoff, err)?;
                        if let Some(known) = &url {
                            let info = run.retrying(backoff, || self.info(known))?;
                            if info.complete {
                                return self.verified(info, digest, resumed_from);
                            }
                            offset = info.offset;
                        }
                    }
                }
            }
            run.set_sent(0, self.size);
            let upload_url = url.clone().expect("a non-empty upload was created");
            digest.advance_to(self.source, self.size)?;
            let info = run.retrying(backoff, || self.complete(&upload_url, digest))?;
            if info.complete {
                return self.verified(info, digest, resumed_from);
            }
            // The server holds fewer bytes than it acknowledged (it lost
            // some): send them again.
            offset = info.offset;
        }
    }
}

enum Put {
    Stored(Info),
    /// The server's offset is not the one the chunk was sent for.
    Elsewhere(u64),
}

impl Upload<'_, '_> {
    /// `PUT` of `start..end`: to the endpoint (creating the upload, with its
    /// name) or to the upload's URL. `md5` takes in the bytes as they go.
    fn put(
        &self,
        url: Option<&str>,
        start: u64,
        end: u64,
        md5: &mut chunkd_md5::Md5,
    ) -> Result<Put> {
        let form = Form::new();
        let mut head = String::new();
        if url.is_none() {
            head.push_str(&form.field("filename", self.source.name()));
        }
        head.push_str(&form.file_head());
        let tail = form.end();
        let len = head.len() as u64 + (end - start) + tail.len() as u64;
        let chunk = Hashing {
            inner: self.source.range(start, end),
            md5: Some(md5),
        };
        let mut body = head
            .as_bytes()
            .chain(Counted {
                inner: chunk,
                run: self.run,
                part: 0,
            })
            .chain(tail.as_bytes());
        let range = format!("bytes {start}-{}/{}", end - 1, self.size);
        let reply = self.run.http.call(
            "PUT",
            url.unwrap_or(self.endpoint),
            &[
                ("Content-Range", &range),
                ("Content-Type", &form.content_type()),
            ],
            Body::Reader {
                reader: &mut body,
                len,
            },
        )?;
        match reply.status {
            200 | 201 => Ok(Put::Stored(info(&reply)?)),
            400 => match reply
                .json()
                .ok()
                .and_then(|j| j["expected_offset"].as_u64())
            {
                Some(expected) => Ok(Put::Elsewhere(expected)),
                None => Err(reply.error()),
            },
            _ if url.is_none() => Err(reply.endpoint_error()),
            _ => Err(reply.error()),
        }
    }

    fn info(&self, url: &str) -> Result<Info> {
        fetch(self.run, url)
    }

    /// `POST` of the MD5; an incomplete upload comes back with its offset.
    fn complete(&self, url: &str, digest: &FileDigest) -> Result<Info> {
        let form = format!("md5={}", digest.hex());
        let reply = self.run.http.call(
            "POST",
            url,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Body::Reader {
                reader: &mut form.as_bytes(),
                len: form.len() as u64,
            },
        )?;
        match reply.status {
            200 => info(&reply),
            // "Upload is incomplete", with the server's offset.
            400 if reply.json().is_ok_and(|j| j["offset"].is_u64()) => info(&reply),
            400 if reply.message().contains("checksum") => Err(Error::ChecksumMismatch(format!(
                "the server's copy of {url} differs from the local file (local MD5 {}): {}",
                digest.hex(),
                reply.message()
            ))),
            _ => Err(reply.error()),
        }
    }

    /// An empty file: created and completed by one `POST`.
    fn whole(&self, backoff: &mut Backoff, digest: &mut FileDigest) -> Result<Outcome> {
        let form = Form::new();
        let body = [
            form.field("filename", self.source.name()),
            form.field("md5", &digest.hex()),
            form.file_head(),
            form.end(),
        ]
        .concat();
        let content_type = form.content_type();
        self.run.started(self.endpoint, Some(0), 0);
        let info = self.run.retrying(backoff, || {
            let reply = self.run.http.call(
                "POST",
                self.endpoint,
                &[("Content-Type", &content_type)],
                Body::Reader {
                    reader: &mut body.as_bytes(),
                    len: body.len() as u64,
                },
            )?;
            match reply.status {
                200 | 201 => info(&reply),
                _ => Err(reply.endpoint_error()),
            }
        })?;
        self.verified(info, digest, 0)
    }

    /// A complete upload, checked against the local MD5.
    fn verified(&self, info: Info, digest: &mut FileDigest, resumed_from: u64) -> Result<Outcome> {
        digest.advance_to(self.source, self.size)?;
        let local = digest.hex();
        if let Some(remote) = &info.md5 {
            if !remote.eq_ignore_ascii_case(&local) {
                return Err(Error::ChecksumMismatch(format!(
                    "the server holds MD5 {remote}, the local file has {local}"
                )));
            }
        }
        Ok(Outcome {
            url: info.url.unwrap_or_else(|| self.endpoint.to_owned()),
            protocol: Protocol::Chunked,
            size: self.size,
            md5: local,
            resumed_from,
            retries: 0,
            parts: 1,
        })
    }
}

fn info(reply: &Reply) -> Result<Info> {
    let json = reply.json()?;
    let offset = json["offset"]
        .as_u64()
        .ok_or_else(|| Error::Protocol(format!("no offset in {}", reply.body)))?;
    let text = |key: &str| json[key].as_str().map(str::to_owned);
    Ok(Info {
        url: text("url"),
        offset,
        total: json["total"].as_u64(),
        complete: json["status"].as_u64() == Some(2),
        md5: text("md5"),
        expires: text("expires_at"),
    })
}

/// `GET` of an upload: where it stands.
fn fetch(run: &Run, url: &str) -> Result<Info> {
    let reply = run.http.call("GET", url, &[], Body::Empty)?;
    match reply.status {
        200 => info(&reply),
        _ => Err(reply.error()),
    }
}

pub(crate) fn status(run: &Run, url: &str) -> Result<Status> {
    let upload = fetch(run, url)?;
    Ok(Status {
        url: upload.url.unwrap_or_else(|| url.to_owned()),
        protocol: Protocol::Chunked,
        offset: upload.offset,
        total: upload.total,
        complete: upload.complete,
        md5: upload.md5,
        expires: upload.expires,
    })
}

/// A `multipart/form-data` body with a random boundary.
struct Form {
    boundary: String,
}

impl Form {
    fn new() -> Self {
        Form {
            boundary: format!("chunkup{:016x}", random_u64()),
        }
    }

    fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    fn field(&self, name: &str, value: &str) -> String {
        format!(
            "--{}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n",
            self.boundary
        )
    }

    /// The head of the `file` part; its bytes follow (the server ignores
    /// the part's own file name).
    fn file_head(&self) -> String {
        format!(
            "--{}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"blob\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n",
            self.boundary
        )
    }

    fn end(&self) -> String {
        format!("\r\n--{}--\r\n", self.boundary)
    }
}
