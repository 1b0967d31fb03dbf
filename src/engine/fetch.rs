//! Remote files fetched on a client's behalf (FilePond's `fetch`): a
//! server-side request forgery hole unless guarded. Only http and https;
//! the host is resolved once, here, and each of its addresses must be
//! public (not loopback, private, link-local, CGNAT, multicast,
//! unspecified, reserved, nor the IPv6 forms of these), unless the
//! operator listed the host; the connection goes to the addresses checked;
//! no redirect is followed and no proxy from the environment is used (it
//! would resolve the host itself); the body is capped at the size limit
//! and the whole call at `FETCH_TIMEOUT`.

use super::error::{EngineError, EngineResult};
use super::{
    blocking_failed, BodyLength, BodyRules, Caller, Completion, Engine, Hashing, NewUpload,
};
use crate::meta::UploadRecord;
use bytes::Bytes;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// The most a fetch takes, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read from the remote body at a time.
const PIECE: usize = 64 * 1024;

/// Whether `ip` is an address of the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // Forms that carry an IPv4 address: mapped, compatible, 6to4,
            // NAT64.
            let embedded = match s {
                [0, 0, 0, 0, 0, 0xffff, ..] | [0, 0, 0, 0, 0, 0, ..] => Some((s[6], s[7])),
                [0x2002, high, low, ..] => Some((high, low)),
                [0x64, 0xff9b, 0, 0, 0, 0, ..] => Some((s[6], s[7])),
                _ => None,
            };
            if let Some((high, low)) = embedded {
                let v4 = Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
                return !v6.is_loopback() && !v6.is_unspecified() && is_public(IpAddr::V4(v4));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x2001 && s[1] == 0x0db8))
        }
    }
}

/// Resolves as usual, and refuses a host with an address that is not
/// public, unless the operator listed it.
#[derive(Debug)]
struct PublicOnly {
    allowed_hosts: Arc<Vec<String>>,
}

impl Resolver for PublicOnly {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let addrs = DefaultResolver::default().resolve(uri, config, timeout)?;
        let host = uri.host().unwrap_or("").trim_matches(['[', ']']);
        if self
            .allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
        {
            return Ok(addrs);
        }
        match addrs.iter().find(|addr| !is_public(addr.ip())) {
            Some(addr) => Err(ureq::Error::Io(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{host} is at {}, which is not a public address", addr.ip()),
            ))),
            None => Ok(addrs),
        }
    }
}

fn refused(message: String) -> EngineError {
    EngineError::Refused {
        status: 403,
        message,
    }
}

fn failed(message: String) -> EngineError {
    EngineError::Refused {
        status: 502,
        message: format!("Fetching the remote file failed: {message}"),
    }
}

/// The file's name: the URL's last path segment.
fn name_in(uri: &ureq::http::Uri) -> String {
    let last = uri.path().rsplit('/').next().unwrap_or("");
    let decoded = percent_encoding::percent_decode_str(last).decode_utf8_lossy();
    if decoded.trim().is_empty() {
        "download".to_owned()
    } else {
        decoded.into_owned()
    }
}

impl Engine {
    /// Fetches `url` into a new complete upload of `caller`, named by its
    /// last path segment. Hosts in `allowed_hosts` may be at any address.
    pub async fn fetch(
        &self,
        caller: &Caller,
        url: &str,
        allowed_hosts: Arc<Vec<String>>,
    ) -> EngineResult<UploadRecord> {
        let uri: ureq::http::Uri = url.parse().map_err(|_| refused("Not a URL".to_owned()))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(refused("Only http and https URLs are fetched".to_owned()));
        }
        let filename = name_in(&uri);
        self.check_filename(&filename)?;
        let limit = self.size_limit();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .user_agent(concat!("chunkd/", env!("CARGO_PKG_VERSION")))
            .timeout_global(Some(FETCH_TIMEOUT))
            .build();
        let agent = ureq::Agent::with_parts(
            config,
            DefaultConnector::default(),
            PublicOnly { allowed_hosts },
        );
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, String>>(4);
        let fetching = tokio::task::spawn_blocking(move || {
            let outcome = fetch_into(&agent, uri, limit, &tx);
            if let Err(err) = &outcome {
                // The body breaks off with it, so nothing is recorded.
                let _ = tx.blocking_send(Err(err.to_string()));
            }
            outcome
        });
        let body = Box::pin(async_stream(&mut rx));
        let rules = BodyRules {
            length: BodyLength::UpTo(limit),
            keep_partial: false,
            check: None,
        };
        let staged = self.receive_new(Hashing::Whole, rules, body).await;
        // A fetching thread still sending learns that nobody reads.
        drop(rx);
        fetching.await.map_err(blocking_failed)??;
        let staged = staged?;
        let new = NewUpload {
            filename,
            total: Some(staged.received()),
            ..NewUpload::default()
        };
        self.create(staged, caller, new, Completion::LastByte).await
    }
}

/// The pieces the fetching thread sends, as a body stream.
fn async_stream(
    rx: &mut tokio::sync::mpsc::Receiver<Result<Bytes, String>>,
) -> impl futures_util::Stream<Item = Result<Bytes, String>> + '_ {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Fetches `uri`, sending its body to `tx` piece by piece.
fn fetch_into(
    agent: &ureq::Agent,
    uri: ureq::http::Uri,
    limit: u64,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, String>>,
) -> EngineResult<()> {
    let response = agent.get(uri).call().map_err(|err| match err {
        ureq::Error::Io(io) if io.kind() == io::ErrorKind::PermissionDenied => {
            refused(io.to_string())
        }
        other => failed(other.to_string()),
    })?;
    let status = response.status();
    if !status.is_success() {
        return Err(failed(format!("the remote server answered {status}")));
    }
    let announced = response
        .headers()
        .get(ureq::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|len| len > limit) {
        return Err(EngineError::TooLarge { limit });
    }
    // The engine counts the bytes against the limit as they come; past it
    // it stops reading, and so does this thread.
    let mut reader = response.into_body().into_reader();
    loop {
        let mut piece = vec![0u8; PIECE];
        let n = reader
            .read(&mut piece)
            .map_err(|err| failed(err.to_string()))?;
        if n == 0 {
            return Ok(());
        }
        piece.truncate(n);
        if tx.blocking_send(Ok(Bytes::from(piece))).is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "2002:7f00:1::",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn names_come_from_the_path() {
        let uri = |u: &str| u.parse::<ureq::http::Uri>().unwrap();
        assert_eq!(
            name_in(&uri("https://a.example/x/r%C3%A9sum%C3%A9.pdf?q=1")),
            "résumé.pdf"
        );
        assert_eq!(name_in(&uri("https://a.example/")), "download");
    }
}
