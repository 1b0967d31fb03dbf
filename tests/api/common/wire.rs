//! Raw HTTP/1.1 over TCP: request heads, kept-alive exchanges and
//! responses parsed byte for byte.

use super::Server;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "not JSON ({err}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The id at the end of the `Location` header (tus creation).
    pub fn location_id(&self) -> String {
        let location = self.header("location").expect("a Location header");
        location.rsplit('/').next().unwrap().to_owned()
    }
}

/// The head of a request, for tests that send its body themselves; the
/// server closes the connection once it has answered.
pub fn request_head(
    method: &str,
    path: &str,
    addr: &str,
    headers: &[(&str, &str)],
    len: Option<u64>,
) -> Vec<u8> {
    let mut with_close = vec![("Connection", "close")];
    with_close.extend_from_slice(headers);
    kept_alive_head(method, path, addr, &with_close, len)
}

/// The head of a request after which the connection stays open for the
/// next one (HTTP/1.1's default).
pub fn kept_alive_head(
    method: &str,
    path: &str,
    addr: &str,
    headers: &[(&str, &str)],
    len: Option<u64>,
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(len) = len {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Starts a request whose body is `declared` bytes long but sends only
/// `sent`; the caller goes on, waits or drops the connection.
pub fn partial_request(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    declared: u64,
    sent: &[u8],
) -> TcpStream {
    let mut stream = connect(&server.addr);
    stream
        .write_all(&request_head(
            method,
            path,
            &server.addr,
            headers,
            Some(declared),
        ))
        .unwrap();
    stream.write_all(sent).unwrap();
    stream.flush().unwrap();
    stream
}

/// Drops a connection with a reset (RST), as a client that vanished, not
/// with an orderly close.
pub fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
}

pub fn connect(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
}

pub fn read_response(stream: TcpStream) -> Response {
    try_read_response(stream).unwrap()
}

/// The response, or an error when the connection broke before one came.
pub fn try_read_response(mut stream: TcpStream) -> std::io::Result<Response> {
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    if !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        read?;
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "no response",
        ));
    }
    Ok(parse_response(&raw))
}

/// One request on a connection kept between requests: `kept`'s, or a new
/// one from `open`; the head, the body that `send_body` sends, and the
/// response, after which the connection is kept for the next request
/// unless the server said it closes it.
pub fn exchange_kept(
    kept: &mut Option<TcpStream>,
    open: impl FnOnce() -> TcpStream,
    head: &[u8],
    send_body: impl FnOnce(&mut TcpStream),
) -> Response {
    let mut conn = kept.take().unwrap_or_else(open);
    conn.write_all(head).unwrap();
    send_body(&mut conn);
    let resp = read_response_on(&mut conn);
    if resp.header("connection") != Some("close") {
        *kept = Some(conn);
    }
    resp
}

/// The next response on a connection that stays open: its head, and as
/// many body bytes as its Content-Length says (none without one).
pub fn read_response_on(stream: &mut TcpStream) -> Response {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let fill = |stream: &mut TcpStream, raw: &mut Vec<u8>, buf: &mut [u8]| {
        let n = stream.read(buf).expect("a response");
        assert!(n > 0, "the server closed the connection mid-response");
        raw.extend_from_slice(&buf[..n]);
    };
    let body_at = loop {
        match raw.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(at) if raw.starts_with(b"HTTP/1.1 1") => drop(raw.drain(..at + 4)),
            Some(at) => break at + 4,
            None => fill(stream, &mut raw, &mut buf),
        }
    };
    let head = parse_response(&raw[..body_at]);
    assert!(
        head.header("transfer-encoding").is_none(),
        "a chunked response on a kept connection"
    );
    let len: usize = head
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap());
    while raw.len() < body_at + len {
        fill(stream, &mut raw, &mut buf);
    }
    assert_eq!(raw.len(), body_at + len, "bytes past the response");
    parse_response(&raw)
}

/// The final response in `raw`: interim (1xx) responses before it are
/// passed over, as HTTP clients do.
pub fn parse_response(mut raw: &[u8]) -> Response {
    while raw.starts_with(b"HTTP/1.1 1") {
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            break;
        };
        raw = &raw[end + 4..];
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_request(addr, method, path, headers, body).unwrap()
}

/// A request, or an error when the server is gone.
pub fn try_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let len = (!body.is_empty() || matches!(method, "PUT" | "POST")).then_some(body.len() as u64);
    stream.write_all(&request_head(method, path, addr, headers, len))?;
    // The server may answer (and close) before reading the whole body. No
    // half-close: the request says Connection: close, the server closes.
    let _ = stream.write_all(body);
    try_read_response(stream)
}
