//! Owners and tokens: isolation, 401s, anonymous uploads, the token CLI,
//! and URLs behind a proxy.

use crate::both_backends;
use crate::common::*;
use serde_json::json;

fn owners_see_only_their_uploads(backend: Backend) {
    let store = Store::new(backend);
    let (alice_token, bob_token) = (store.token("alice"), store.token("bob"));
    let server = Server::start(&store, &[]);
    let alice = Client::new(&server, &alice_token);
    let bob = Client::new(&server, &bob_token);
    let done = alice.upload("a.txt", b"alice's", 7);
    let id = done["id"].as_str().unwrap();
    let open = alice.put_chunk("/upload/", "bytes 0-1/4", Some("b.txt"), b"ab");
    let open_id = open.json()["id"].as_str().unwrap().to_owned();
    let not_found = json!({"detail": "Not found."});
    for resp in [
        bob.get(&format!("/upload/{id}/")),
        bob.get(&format!("/upload/{id}/file")),
        bob.complete(id, &md5_hex(b"alice's")),
        bob.put_chunk(&format!("/upload/{open_id}/"), "bytes 2-3/4", None, b"cd"),
        bob.send("DELETE", &format!("/upload/{open_id}/"), &[], b""),
    ] {
        assert_eq!((resp.status, resp.json()), (404, not_found.clone()));
    }
    assert_eq!(bob.get("/upload/").json(), json!([]));
    assert_eq!(alice.get("/upload/").json().as_array().unwrap().len(), 2);
    // Bob changed nothing.
    assert_eq!(
        alice.get(&format!("/upload/{open_id}/")).json()["offset"],
        2
    );

    // Bearer works as well as Token.
    let bearer = server.request(
        "GET",
        "/upload/",
        &[("Authorization", &format!("Bearer {alice_token}"))],
        b"",
    );
    assert_eq!(bearer.json().as_array().unwrap().len(), 2);
}

fn unrestricted_owners_share_uploads(backend: Backend) {
    let store = Store::new(backend);
    let (alice_token, bob_token) = (store.token("alice"), store.token("bob"));
    let server = Server::start(&store, &["--owner-restricted", "false"]);
    let alice = Client::new(&server, &alice_token);
    let bob = Client::new(&server, &bob_token);
    let done = alice.upload("a.txt", b"shared", 6);
    let seen = bob.get(&format!("/upload/{}/", done["id"].as_str().unwrap()));
    assert_eq!(seen.status, 200);
    assert_eq!(seen.json()["user"], "alice");
    assert_eq!(bob.get("/upload/").json().as_array().unwrap().len(), 1);
}

fn credentials_are_required(backend: Backend) {
    let store = Store::new(backend);
    let token = store.token("alice");
    let server = Server::start(&store, &[]);
    let none = server.request("GET", "/upload/", &[], b"");
    assert_eq!(
        (none.status, none.json()),
        (
            401,
            json!({"detail": "Authentication credentials were not provided."})
        )
    );
    assert_eq!(none.header("www-authenticate"), Some("Token"));
    let create = server.request(
        "PUT",
        "/upload/?filename=a",
        &[("Content-Range", "bytes 0-0/1")],
        b"a",
    );
    assert_eq!(create.status, 401);
    for bad in [
        "Token nope",
        "Token",
        "Basic YWxpY2U6eA==",
        &format!("Token {token}x"),
    ] {
        let resp = server.request("GET", "/upload/", &[("Authorization", bad)], b"");
        assert_eq!(
            (resp.status, resp.json()),
            (401, json!({"detail": "Invalid token."})),
            "{bad}"
        );
    }
    assert!(store.part_files().is_empty());
}

fn token_cli_creates_lists_and_revokes(backend: Backend) {
    let store = Store::new(backend);
    let token = store.token("carol");
    assert_eq!(token.len(), 40);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    let server = Server::start(&store, &[]);
    let carol = Client::new(&server, &token);
    assert_eq!(carol.get("/upload/").status, 200);
    let (ok, listed, _) = store.run(&["token", "list"]);
    assert!(ok);
    let line = listed
        .lines()
        .find(|l| l.contains("\tcarol\t"))
        .expect("carol's token is listed");
    // The token itself is never shown again.
    assert!(!listed.contains(&token));
    let id = line.split('\t').next().unwrap();
    let (ok, _, _) = store.run(&["token", "revoke", id]);
    assert!(ok);
    assert_eq!(carol.get("/upload/").status, 401);
    let (ok, _, err) = store.run(&["token", "revoke", id]);
    assert!(!ok);
    assert!(err.contains("no token"));
}

/// An append trusts a token seen before without a lookup of its own; once
/// the token is revoked (by another process) the next chunk is refused all
/// the same, in both protocols, and nothing of it is stored.
fn a_revoked_token_appends_nothing(backend: Backend) {
    let store = Store::new(backend);
    let token = store.token("dave");
    let server = Server::start(&store, &[]);
    let dave = Client::new(&server, &token);
    let data = bytes(20, 4);
    let created = dave.put_raw("/upload/?filename=d", "bytes 0-9/20", &data[..10]);
    assert_eq!(created.status, 200, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let tus = |method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]| {
        let mut all = vec![("Tus-Resumable", "1.0.0")];
        all.extend_from_slice(headers);
        dave.send(method, path, &all, body)
    };
    let posted = tus("POST", "/files/", &[("Upload-Length", "20")], b"");
    assert_eq!(posted.status, 201);
    let tus_path = format!("/files/{}", posted.location_id());
    let patch = |offset: &str, body: &[u8]| {
        tus(
            "PATCH",
            &tus_path,
            &[
                ("Content-Type", "application/offset+octet-stream"),
                ("Upload-Offset", offset),
            ],
            body,
        )
    };
    assert_eq!(patch("0", &data[..10]).status, 204);
    let (ok, listed, _) = store.run(&["token", "list"]);
    assert!(ok);
    let line = listed.lines().find(|l| l.contains("\tdave\t")).unwrap();
    let (ok, _, _) = store.run(&["token", "revoke", line.split('\t').next().unwrap()]);
    assert!(ok);
    // Twice: once as a token seen before, once as an unknown one.
    for _ in 0..2 {
        let put = dave.put_raw(&format!("/upload/{id}/"), "bytes 10-19/20", &data[10..]);
        assert_eq!(
            (put.status, put.json()),
            (401, json!({"detail": "Invalid token."}))
        );
        assert_eq!(patch("10", &data[10..]).status, 401);
    }
    let again = Client::new(&server, &store.token("dave"));
    assert_eq!(again.get(&format!("/upload/{id}/")).json()["offset"], 10);
    let head = again.send("HEAD", &tus_path, &[("Tus-Resumable", "1.0.0")], b"");
    assert_eq!(head.header("upload-offset"), Some("10"));
    let mut sizes: Vec<u64> = store.part_files().iter().map(|(_, len)| *len).collect();
    sizes.sort();
    assert_eq!(sizes, [10, 10]);
}

fn first_start_prints_an_admin_token(backend: Backend) {
    let store = Store::new(backend);
    let mut child = store
        .command(&["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut token = None;
    let addr = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(t) = line.trim().strip_prefix("Authorization: Token ") {
            token = Some(t.to_owned());
        }
        if let Some(addr) = line.strip_prefix("chunkd listening on http://") {
            break addr.to_owned();
        }
    };
    let token = token.expect("an admin token is printed");
    let resp = request(
        &addr,
        "PUT",
        "/upload/?filename=a.txt",
        &[
            ("Authorization", &format!("Token {token}")),
            ("Content-Range", "bytes 0-0/1"),
        ],
        b"a",
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["user"], "admin");
    child.kill().unwrap();
    child.wait().unwrap();
    // A second start has a token already: none is printed.
    let second = Server::start(&store, &[]);
    drop(second);
    let (_, listed, _) = store.run(&["token", "list"]);
    assert_eq!(listed.lines().count(), 1);
}

fn anonymous_uploads_when_allowed(backend: Backend) {
    let store = Store::new(backend);
    let token = store.token("alice");
    let server = Server::start(&store, &["--anonymous"]);
    let first = server.request(
        "PUT",
        "/upload/?filename=anon.txt",
        &[("Content-Range", "bytes 0-1/4")],
        b"an",
    );
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json()["user"], serde_json::Value::Null);
    let id = first.json()["id"].as_str().unwrap().to_owned();
    let next = server.request(
        "PUT",
        &format!("/upload/{id}/"),
        &[("Content-Range", "bytes 2-3/4")],
        b"on",
    );
    assert_eq!(next.status, 200);
    let done = server.request(
        "POST",
        &format!("/upload/{id}/"),
        &[("Content-Type", "application/x-www-form-urlencoded")],
        format!("md5={}", md5_hex(b"anon")).as_bytes(),
    );
    assert_eq!(done.status, 200);
    // Reachable by its URL, listed to nobody.
    assert_eq!(
        server.request("GET", "/upload/", &[], b"").json(),
        json!([])
    );
    let alice = Client::new(&server, &token);
    assert_eq!(alice.get(&format!("/upload/{id}/file")).body, b"anon");
    assert_eq!(alice.get("/upload/").json(), json!([]));
    // A wrong token is still refused.
    let bad = server.request("GET", "/upload/", &[("Authorization", "Token nope")], b"");
    assert_eq!(bad.status, 401);
}

fn forwarded_headers_only_when_trusted(backend: Backend) {
    let store = Store::new(backend);
    let token = store.token("alice");
    let proxy_headers = [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "files.example.com"),
    ];
    for (flags, expected_base) in [
        (&[][..], None),
        (&["--trust-proxy"][..], Some("https://files.example.com")),
    ] {
        let server = Server::start(&store, flags);
        let client = Client::new(&server, &token);
        let resp = client.send(
            "PUT",
            "/upload/?filename=p.txt",
            &[
                ("Content-Range", "bytes 0-0/2"),
                proxy_headers[0],
                proxy_headers[1],
            ],
            b"p",
        );
        let url = resp.json()["url"].as_str().unwrap().to_owned();
        let base = expected_base
            .map(str::to_owned)
            .unwrap_or_else(|| format!("http://{}", server.addr));
        assert!(url.starts_with(&format!("{base}/upload/")), "{url}");
    }
}

both_backends!(
    owners_see_only_their_uploads,
    unrestricted_owners_share_uploads,
    credentials_are_required,
    token_cli_creates_lists_and_revokes,
    a_revoked_token_appends_nothing,
    first_start_prints_an_admin_token,
    anonymous_uploads_when_allowed,
    forwarded_headers_only_when_trusted,
);
