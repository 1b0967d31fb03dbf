//! One HTTP exchange over ureq. Redirects are not followed (a redirected PUT
//! would lose its body) and statuses are answers, not errors. Timeouts are
//! for inactivity: a chunk on a slow link may take minutes, a silent
//! connection must not hang for ever.

use crate::error::{Error, Result};
use std::io::Read;
use std::time::Duration;
use ureq::http::{HeaderMap, Request};
use ureq::SendBody;

pub struct Http {
    agent: ureq::Agent,
    authorization: Option<String>,
}

pub enum Body<'a> {
    Empty,
    Reader { reader: &'a mut dyn Read, len: u64 },
}

pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Http {
    pub fn new(token: Option<&str>, timeout: Duration) -> Http {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("chunkup/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(timeout))
            .timeout_per_read(Some(timeout))
            .timeout_per_write(Some(timeout))
            .build()
            .new_agent();
        Http {
            agent,
            authorization: token.map(|t| format!("Token {t}")),
        }
    }

    pub fn call(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Result<Reply> {
        let mut request = Request::builder().method(method).uri(url);
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let bad = |err: ureq::http::Error| Error::Usage(format!("{url}: {err}"));
        let sent = match body {
            Body::Empty => self.agent.run(request.body(SendBody::none()).map_err(bad)?),
            Body::Reader { reader, len } => {
                let request = request.header("Content-Length", len);
                self.agent
                    .run(request.body(SendBody::from_reader(reader)).map_err(bad)?)
            }
        };
        let mut response = sent.map_err(|err| transport(url, err))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .lossy_utf8(true)
            .read_to_string()
            .map_err(|err| transport(url, err))?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

fn transport(url: &str, err: ureq::Error) -> Error {
    use ureq::Error as E;
    match err {
        E::BadUri(_) | E::Http(_) | E::InvalidProxyUrl | E::RequireHttpsOnly(_) => {
            Error::Usage(format!("{url}: {err}"))
        }
        // A certificate the client does not trust stays untrusted.
        E::Tls(_) | E::Pem(_) | E::Rustls(_) | E::TooManyRedirects => {
            Error::Protocol(format!("{url}: {err}"))
        }
        _ => Error::Transient(format!("{url}: {err}")),
    }
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn header_u64(&self, name: &str) -> Result<u64> {
        let value = self.header(name).ok_or_else(|| {
            Error::Protocol(format!("no {name} header in a {} answer", self.status))
        })?;
        value
            .trim()
            .parse()
            .map_err(|_| Error::Protocol(format!("{name}: {value:?} is not a number")))
    }

    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body).map_err(|err| {
            Error::Protocol(format!("a {} answer that is not JSON ({err})", self.status))
        })
    }

    /// What the server said: its JSON `detail`, or the start of the body.
    pub fn message(&self) -> String {
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(&self.body) {
            match &json["detail"] {
                serde_json::Value::String(detail) => return detail.clone(),
                serde_json::Value::Null => {}
                other => return other.to_string(),
            }
        }
        let text: String = self.body.trim().chars().take(300).collect();
        if text.is_empty() {
            format!("HTTP {}", self.status)
        } else {
            text
        }
    }

    /// The error an answer means when no protocol gives it a special sense:
    /// busy, locked, overloaded and server errors are worth another try;
    /// a vanished upload and other client errors are not.
    pub fn error(&self) -> Error {
        let (status, mut message) = (self.status, self.message());
        if let (300..=399, Some(location)) = (status, self.header("Location")) {
            // Redirects are not followed (a body would be lost on the way).
            message = format!("redirected to {location}; use that URL");
        }
        let retry_after = self
            .header("Retry-After")
            .and_then(|value| retry_after(value, std::time::SystemTime::now()));
        match (status, retry_after) {
            (429 | 503, Some(after)) => Error::Throttled {
                message: format!("HTTP {status}: {message}"),
                after,
            },
            (408 | 409 | 423 | 425 | 429 | 500 | 502 | 503 | 504 | 507, _) => {
                Error::Transient(format!("HTTP {status}: {message}"))
            }
            (404 | 410, _) => Error::Gone { status, message },
            _ => Error::Rejected { status, message },
        }
    }

    /// The error of an answer to a request on the endpoint itself (creating
    /// an upload): there 404 and 410 mean a wrong URL, not a lost upload,
    /// so they are refusals rather than a reason to start again.
    pub fn endpoint_error(&self) -> Error {
        match self.error() {
            Error::Gone { status, message } => Error::Rejected { status, message },
            other => other,
        }
    }
}

/// `location` made absolute against the URL it answered.
pub fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let origin_end = base
        .find("://")
        .and_then(|i| base[i + 3..].find('/').map(|j| i + 3 + j))
        .unwrap_or(base.len());
    if location.starts_with('/') {
        format!("{}{location}", &base[..origin_end])
    } else {
        let dir_end = base
            .rfind('/')
            .filter(|&i| i >= origin_end)
            .map_or(base.len(), |i| i + 1);
        let mut dir = base[..dir_end].to_owned();
        if !dir.ends_with('/') {
            dir.push('/');
        }
        format!("{dir}{location}")
    }
}

/// A `Retry-After` value, in seconds or as an HTTP date, as the time to
/// wait from `now` (none for a date already past).
fn retry_after(value: &str, now: std::time::SystemTime) -> Option<std::time::Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(std::time::Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::{resolve, retry_after};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    #[test]
    fn locations_resolve_against_the_request_url() {
        let base = "https://h.example:8443/files/";
        assert_eq!(resolve(base, "https://x/files/1"), "https://x/files/1");
        assert_eq!(resolve(base, "/files/1"), "https://h.example:8443/files/1");
        assert_eq!(resolve(base, "1"), "https://h.example:8443/files/1");
        assert_eq!(resolve("http://h", "/files/2"), "http://h/files/2");
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        // RFC 9110's example date is `now`; ten seconds later, and before.
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:30 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", SystemTime::now()), None);
    }
}
