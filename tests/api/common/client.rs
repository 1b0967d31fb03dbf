//! Requests of the protocols as clients send them, their bodies, and the
//! bytes the tests upload.

use super::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;

pub const BOUNDARY: &str = "XbenchBoundary42";

pub enum Part<'a> {
    Text(&'a str, &'a str),
    File(&'a str, &'a str, &'a [u8]),
}

/// A multipart/form-data body like the ones drf clients send.
pub fn multipart(parts: &[Part]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match part {
            Part::Text(name, value) => {
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                        .as_bytes(),
                );
            }
            Part::File(name, filename, data) => {
                body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n\
                         Content-Type: application/octet-stream\r\n\r\n"
                    )
                    .as_bytes(),
                );
                body.extend_from_slice(data);
                body.extend_from_slice(b"\r\n");
            }
        }
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

pub fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// The header every tus request carries.
pub const TUS: (&str, &str) = ("Tus-Resumable", "1.0.0");
/// The content type of a tus PATCH body.
pub const STREAM: (&str, &str) = ("Content-Type", "application/offset+octet-stream");

pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u8
        })
        .collect()
}

/// The usual start of a test: a store, a token for alice, a server.
pub struct Setup {
    pub store: Store,
    pub token: String,
    pub server: Server,
}

impl Setup {
    pub fn new(backend: Backend, flags: &[&str]) -> Self {
        let store = Store::new(backend);
        let token = store.token("alice");
        let server = Server::start(&store, flags);
        Setup {
            store,
            token,
            server,
        }
    }

    pub fn client(&self) -> Client<'_> {
        Client::new(&self.server, &self.token)
    }
}

/// A client of one owner on one server.
pub struct Client<'a> {
    pub server: &'a Server,
    pub auth: String,
}

impl<'a> Client<'a> {
    pub fn new(server: &'a Server, token: &str) -> Self {
        Client {
            server,
            auth: format!("Token {token}"),
        }
    }

    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let mut all = vec![("Authorization", self.auth.as_str())];
        all.extend_from_slice(headers);
        self.server.request(method, path, &all, body)
    }

    /// A chunk as multipart, with `filename` when given (creation).
    pub fn put_chunk(
        &self,
        path: &str,
        range: &str,
        filename: Option<&str>,
        data: &[u8],
    ) -> Response {
        let mut parts = Vec::new();
        if let Some(name) = filename {
            parts.push(Part::Text("filename", name));
        }
        parts.push(Part::File("file", "chunk.bin", data));
        let ctype = multipart_type();
        self.send(
            "PUT",
            path,
            &[("Content-Range", range), ("Content-Type", &ctype)],
            &multipart(&parts),
        )
    }

    /// A chunk as a raw body.
    pub fn put_raw(&self, path: &str, range: &str, data: &[u8]) -> Response {
        self.send(
            "PUT",
            path,
            &[
                ("Content-Range", range),
                ("Content-Type", "application/octet-stream"),
            ],
            data,
        )
    }

    pub fn complete(&self, id: &str, md5: &str) -> Response {
        self.send(
            "POST",
            &format!("/upload/{id}/"),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            format!("md5={md5}").as_bytes(),
        )
    }

    pub fn get(&self, path: &str) -> Response {
        self.send("GET", path, &[], b"")
    }

    /// Uploads `data` in chunks of `chunk` bytes (multipart) and completes it.
    pub fn upload(&self, name: &str, data: &[u8], chunk: usize) -> Value {
        let total = data.len();
        let mut id = String::new();
        for start in (0..total).step_by(chunk) {
            let end = (start + chunk).min(total);
            let range = format!("bytes {}-{}/{}", start, end - 1, total);
            let path = if start == 0 {
                "/upload/".to_owned()
            } else {
                format!("/upload/{id}/")
            };
            let filename = (start == 0).then_some(name);
            let resp = self.put_chunk(&path, &range, filename, &data[start..end]);
            assert_eq!(resp.status, 200, "{}", resp.text());
            let json = resp.json();
            assert_eq!(json["offset"], end as u64);
            id = json["id"].as_str().unwrap().to_owned();
        }
        let resp = self.complete(&id, &md5_hex(data));
        assert_eq!(resp.status, 200, "{}", resp.text());
        resp.json()
    }
}

/// Clients race different bytes at the same offset of one upload, round
/// after round (`racers` requests spread over `clients`): exactly one wins
/// each round, the others learn the offset (400) or that the upload is busy
/// (409); at the end the upload holds exactly the winners' bytes.
pub fn race_rounds(clients: &[Client], racers: u64, chunk: usize, rounds: usize) {
    let total = chunk * rounds;
    let first = clients[0].put_raw(
        "/upload/?filename=race.bin",
        &format!("bytes 0-{}/{total}", chunk - 1),
        &bytes(chunk, 0),
    );
    assert_eq!(first.status, 200, "{}", first.text());
    let id = first.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/upload/{id}/");
    let mut expected = bytes(chunk, 0);
    for round in 1..rounds {
        let start = round * chunk;
        let range = format!("bytes {start}-{}/{total}", start + chunk - 1);
        let results: Vec<(u16, Vec<u8>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..racers)
                .map(|racer| {
                    let client = &clients[racer as usize % clients.len()];
                    let (range, path) = (&range, &path);
                    scope.spawn(move || {
                        let data = bytes(chunk, 1000 * round as u64 + racer);
                        (client.put_raw(path, range, &data).status, data)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let statuses: Vec<u16> = results.iter().map(|r| r.0).collect();
        let winners: Vec<_> = results
            .iter()
            .filter(|(status, _)| *status == 200)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {statuses:?}");
        assert!(
            statuses.iter().all(|s| [200, 400, 409].contains(s)),
            "{statuses:?}"
        );
        expected.extend_from_slice(&winners[0].1);
    }
    let last = &clients[clients.len() - 1];
    let done = last.complete(&id, &md5_hex(&expected));
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(clients[0].get(&format!("{path}file")).body, expected);
}

/// A TCP proxy in front of a server that cuts the connection (both ways)
/// each time another `cut_every` bytes went from clients to the server,
/// `cuts` times: a network that fails mid-request.
pub struct CuttingProxy {
    pub addr: String,
    pub cut: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CuttingProxy {
    pub fn start(target: &str, cut_every: u64, cuts: usize) -> Self {
        use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (sent, cut) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicUsize::new(0)));
        let (target, done) = (target.to_owned(), cut.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let (mut from_client, mut to_server) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (sent, done) = (sent.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = from_client.read(&mut buf) {
                        if n == 0 || to_server.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        let before = sent.fetch_add(n as u64, Ordering::SeqCst);
                        let crossed = before / cut_every != (before + n as u64) / cut_every;
                        let cut_now = crossed
                            && done
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| {
                                    (d < cuts).then_some(d + 1)
                                })
                                .is_ok();
                        if cut_now {
                            let _ = from_client.shutdown(std::net::Shutdown::Both);
                            let _ = to_server.shutdown(std::net::Shutdown::Both);
                            break;
                        }
                    }
                    let _ = to_server.shutdown(std::net::Shutdown::Write);
                });
                let (mut from_server, mut to_client) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_server, &mut to_client);
                    let _ = to_client.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        CuttingProxy { addr, cut }
    }

    /// How many connections it cut.
    pub fn cuts(&self) -> usize {
        self.cut.load(std::sync::atomic::Ordering::SeqCst)
    }
}
