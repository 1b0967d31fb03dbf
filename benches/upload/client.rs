//! The benchmark's client: each protocol's requests, sent from a file with
//! sendfile(2) on kept-alive connections.

use crate::common::*;
use crate::report::{GIB, MIB};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Which protocol a scenario speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `PUT /upload/` with `Content-Range` (drf-chunked-upload).
    Chunked,
    /// `POST /files/`, then `PATCH` (tus 1.0).
    Tus,
    /// tus on a server that does not hash tus uploads (`--hash-tus false`).
    TusUnhashed,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Chunked, Protocol::Tus, Protocol::TusUnhashed];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Chunked => "chunked",
            Protocol::Tus => "tus",
            Protocol::TusUnhashed => "tus-unhashed",
        }
    }

    pub fn is_tus(self) -> bool {
        self != Protocol::Chunked
    }

    /// What the server needs for it, beyond the sync flags.
    pub fn server_flags(self) -> &'static [&'static str] {
        match self {
            Protocol::TusUnhashed => &["--hash-tus", "false"],
            _ => &[],
        }
    }
}

/// Sends `len` bytes of `file` from `file_pos` to `stream` with
/// sendfile(2): the page cache straight to the socket, so the client, which
/// shares the machine's two cores with the server, costs as little as it
/// can.
pub fn sendfile_all(stream: &std::net::TcpStream, file: &File, file_pos: u64, len: u64) {
    let mut pos = file_pos as libc::off_t;
    let end = (file_pos + len) as libc::off_t;
    while pos < end {
        let count = (end - pos).min(MIB as libc::off_t) as usize;
        // SAFETY: both descriptors are open for the whole call, and `pos`
        // is a valid offset that the kernel advances.
        let sent = unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut pos, count) };
        assert!(sent > 0, "sendfile: {}", std::io::Error::last_os_error());
    }
}

/// The congestion control of the client's connections. Over loopback there
/// is no path to pace for, yet BBR (where it is the machine's default)
/// paces every send with timers, and that work lands in the softirq of the
/// server's receiving thread and slows the receive the benchmark measures
/// (docs/benchmarks/2026-12-04-intel-xeon-167.md). It is set before
/// connecting, since BBR leaves its pacing on when swapped out.
pub const CLIENT_CONGESTION: &[u8] = b"cubic";

/// The client's end of a connection to the server at `addr`, with
/// [`CLIENT_CONGESTION`].
pub fn client_connection(addr: impl std::net::ToSocketAddrs) -> std::net::TcpStream {
    let addr = addr.to_socket_addrs().unwrap().next().expect("an address");
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    // SAFETY: a valid socket, and the option's value is the name's bytes.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            CLIENT_CONGESTION.as_ptr().cast(),
            CLIENT_CONGESTION.len() as libc::socklen_t,
        )
    };
    assert_eq!(
        set,
        0,
        "the client's congestion control: {}",
        std::io::Error::last_os_error()
    );
    socket.connect(&addr.into()).unwrap();
    let stream = std::net::TcpStream::from(socket);
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
}

/// Sends one request whose body is `len` bytes of `file` from `file_pos`,
/// streamed from the file, on the upload's connection `conn` (opened when
/// there is none, kept for the next request unless the server closes it,
/// as chunkup's and browsers' connections are); the response and its
/// latency.
pub fn send_from_file(
    server: &Server,
    conn: &mut Option<std::net::TcpStream>,
    head: (&str, &str, &[(&str, &str)]),
    file: &File,
    file_pos: u64,
    len: u64,
) -> (Response, Duration) {
    let (method, path, headers) = head;
    let began = Instant::now();
    let head = kept_alive_head(method, path, &server.addr, headers, Some(len));
    let resp = exchange_kept(
        conn,
        || client_connection(&server.addr),
        &head,
        |stream| sendfile_all(stream, file, file_pos, len),
    );
    assert!(
        (200..=204).contains(&resp.status),
        "{} {}",
        resp.status,
        resp.text()
    );
    (resp, began.elapsed())
}

/// Uploads `len` bytes of `file` from `offset` in chunks, starting over at
/// the file's start after its last GiB (so 10 GiB send the 1 GiB source ten
/// times over; chunks divide 1 GiB); returns the id and each chunk's
/// latency.
pub fn upload(
    server: &Server,
    auth: &str,
    file: &File,
    (offset, len, chunk): (u64, u64, u64),
    protocol: Protocol,
) -> (String, Vec<Duration>) {
    let mut id = String::new();
    if protocol.is_tus() {
        let length = len.to_string();
        let created = server.request(
            "POST",
            "/files/",
            &[
                ("Authorization", auth),
                ("Tus-Resumable", "1.0.0"),
                ("Upload-Length", &length),
            ],
            b"",
        );
        assert_eq!(created.status, 201, "{}", created.text());
        id = created.location_id();
    }
    let mut latencies = Vec::new();
    let mut sent = 0;
    let mut conn = None;
    while sent < len {
        let n = (len - sent).min(chunk);
        let file_pos = (offset + sent) % GIB;
        let (resp, took) = match protocol {
            Protocol::Chunked => {
                let path = if sent == 0 {
                    "/upload/?filename=bench.bin".to_owned()
                } else {
                    format!("/upload/{id}/")
                };
                let range = format!("bytes {sent}-{}/{len}", sent + n - 1);
                let headers = [("Authorization", auth), ("Content-Range", range.as_str())];
                send_from_file(
                    server,
                    &mut conn,
                    ("PUT", &path, &headers),
                    file,
                    file_pos,
                    n,
                )
            }
            Protocol::Tus | Protocol::TusUnhashed => {
                let path = format!("/files/{id}");
                let at = sent.to_string();
                let headers = [
                    ("Authorization", auth),
                    ("Tus-Resumable", "1.0.0"),
                    ("Content-Type", "application/offset+octet-stream"),
                    ("Upload-Offset", at.as_str()),
                ];
                send_from_file(
                    server,
                    &mut conn,
                    ("PATCH", &path, &headers),
                    file,
                    file_pos,
                    n,
                )
            }
        };
        if protocol == Protocol::Chunked {
            id = resp.json()["id"].as_str().unwrap().to_owned();
        }
        latencies.push(took);
        sent += n;
    }
    (id, latencies)
}
