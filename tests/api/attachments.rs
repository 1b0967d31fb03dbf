//! Session attachments at /attachments/: django-session-attachments' README
//! session with the real curl and a cookie jar, holders (cookie sessions
//! and token owners) kept apart, same-name replacement, removal, expiry,
//! and a finished tus upload attached by its id.

use crate::both_backends;
use crate::common::*;
use std::process::Command;
use std::time::Duration;

/// The README's curl commands, verbatim but for the address, against a
/// server that takes visitors.
fn the_readme_session_works_with_curl(backend: Backend) {
    let setup = Setup::new(backend, &["--anonymous", "true"]);
    let dir = TempDir::new("attachments-curl");
    std::fs::write(dir.0.join("spam.txt"), "spam\n").unwrap();
    std::fs::write(dir.0.join("egg.txt"), "egg\n").unwrap();
    let base = setup.server.url("/attachments/foo/");
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .current_dir(&dir.0)
            .args([
                "-s",
                "--cookie",
                "session.txt",
                "--cookie-jar",
                "session.txt",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let posted = curl(&[
        "-F",
        "attach1=@spam.txt",
        "-F",
        "attach2=@egg.txt",
        "-X",
        "POST",
        &base,
    ]);
    let listed = curl(&["-X", "GET", &base]);
    for answer in [&posted, &listed] {
        assert!(answer.ends_with("\r\n"), "{answer:?}");
        let items: serde_json::Value = serde_json::from_str(answer).unwrap();
        let names: Vec<(&str, u64, &str)> = items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let created = i["created"].as_str().unwrap();
                assert_eq!(created.len(), "2011-12-29 04:12".len());
                (
                    i["name"].as_str().unwrap(),
                    i["size"].as_u64().unwrap(),
                    i["mimetype"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [("egg.txt", 4, "text/plain"), ("spam.txt", 5, "text/plain")]
        );
    }
    assert_eq!(curl(&["-X", "GET", &format!("{base}spam.txt/")]), "spam\n");
    assert_eq!(
        curl(&["-X", "POST", &format!("{base}spam.txt/delete/")]),
        "[true]\r\n"
    );
    assert_eq!(
        curl(&["-X", "POST", &format!("{base}spam.txt/delete/")]),
        "[false]\r\n"
    );
    assert_eq!(
        curl(&["-X", "POST", &format!("{base}delete/")]),
        "[[true]]\r\n"
    );
    assert_eq!(curl(&["-X", "GET", &base]), "[]\r\n");
    let jar = std::fs::read_to_string(dir.0.join("session.txt")).unwrap();
    assert!(
        jar.contains("#HttpOnly_") && jar.contains("chunkd_session"),
        "{jar}"
    );
}

/// The `chunkd_session=…` pair of a response's `Set-Cookie`.
fn session_of(resp: &Response) -> String {
    let cookie = resp.header("set-cookie").expect("a new session's cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "not over TLS: {cookie}");
    cookie.split(';').next().unwrap().to_owned()
}

fn attach(
    server: &Server,
    headers: &[(&str, &str)],
    bundle: &str,
    name: &str,
    data: &[u8],
) -> Response {
    let ctype = multipart_type();
    let mut all = vec![("Content-Type", ctype.as_str())];
    all.extend_from_slice(headers);
    let body = multipart(&[Part::File("file", name, data)]);
    server.request("POST", &format!("/attachments/{bundle}/"), &all, &body)
}

fn names(resp: &Response) -> Vec<(String, u64)> {
    assert_eq!(resp.status, 200, "{}", resp.text());
    let items: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_owned(),
                i["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Two visitors' sessions and two token owners, each with a `same.txt` in
/// a bundle `b`, see and remove only their own; a made-up cookie sees
/// nothing; a second file of the same name replaces the first, upload and
/// all.
fn holders_never_see_each_other(backend: Backend) {
    let setup = Setup::new(backend, &["--anonymous", "true"]);
    let server = &setup.server;
    let bob_token = setup.store.token("bob");
    let (alice, bob) = (
        format!("Token {}", setup.token),
        format!("Token {bob_token}"),
    );
    let first = attach(server, &[], "b", "same.txt", b"visitor one");
    let one = session_of(&first);
    let second = attach(server, &[], "b", "same.txt", b"visitor two!");
    let two = session_of(&second);
    assert_ne!(one, two);
    attach(
        server,
        &[("Authorization", &alice)],
        "b",
        "same.txt",
        b"alice",
    );
    attach(
        server,
        &[("Authorization", &bob)],
        "b",
        "same.txt",
        b"bob's file",
    );
    let holders = [
        (("Cookie", one.as_str()), &b"visitor one"[..]),
        (("Cookie", two.as_str()), b"visitor two!"),
        (("Authorization", alice.as_str()), b"alice"),
        (("Authorization", bob.as_str()), b"bob's file"),
    ];
    for (who, data) in holders {
        let listed = server.request("GET", "/attachments/b/", &[who], b"");
        assert_eq!(
            names(&listed),
            [("same.txt".to_owned(), data.len() as u64)],
            "{who:?}"
        );
        assert_eq!(listed.header("set-cookie"), None, "a known session is kept");
        let file = server.request("GET", "/attachments/b/same.txt/", &[who], b"");
        assert_eq!(file.body, data, "{who:?}");
        assert_eq!(
            file.header("content-disposition"),
            Some("attachment; filename=\"same.txt\"; filename*=UTF-8''same.txt")
        );
    }
    let forged = format!("chunkd_session={}", "ab".repeat(32));
    let nothing = server.request("GET", "/attachments/b/", &[("Cookie", &forged)], b"");
    assert_eq!(names(&nothing), []);
    let missing = server.request(
        "GET",
        "/attachments/b/same.txt/",
        &[("Cookie", &forged)],
        b"",
    );
    assert_eq!(missing.status, 404);

    // Same name: replaced, and the upload it stood for goes.
    let alice_uploads = || {
        server
            .request("GET", "/upload/", &[("Authorization", &alice)], b"")
            .json()
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(alice_uploads(), 1);
    let replaced = attach(
        server,
        &[("Authorization", &alice)],
        "b",
        "same.txt",
        b"alice, again",
    );
    assert_eq!(names(&replaced), [("same.txt".to_owned(), 12)]);
    let file = server.request(
        "GET",
        "/attachments/b/same.txt/",
        &[("Authorization", &alice)],
        b"",
    );
    assert_eq!(file.body, b"alice, again");
    assert_eq!(alice_uploads(), 1);

    // Removal reaches one holder only.
    let gone = server.request(
        "POST",
        "/attachments/b/same.txt/delete/",
        &[("Cookie", &one)],
        b"",
    );
    assert_eq!(gone.text(), "[true]\r\n");
    let others = [
        (("Cookie", two.as_str()), &b"visitor two!"[..]),
        (("Authorization", alice.as_str()), b"alice, again"),
        (("Authorization", bob.as_str()), b"bob's file"),
    ];
    for (who, data) in others {
        let still = server.request("GET", "/attachments/b/same.txt/", &[who], b"");
        assert_eq!(
            (still.status, still.body.as_slice()),
            (200, data),
            "{who:?}"
        );
    }
    let bundle_gone = server.request(
        "POST",
        "/attachments/b/delete/",
        &[("Authorization", &bob)],
        b"",
    );
    assert_eq!(bundle_gone.text(), "[[true]]\r\n");
    let listed = server.request("GET", "/attachments/b/", &[("Authorization", &alice)], b"");
    assert_eq!(names(&listed).len(), 1);
}

/// Without `--anonymous`, visitors attach nothing; attachments older than
/// `--attachment-expiration` are swept, upload and all.
fn visitors_and_expiry(backend: Backend) {
    let setup = Setup::new(backend, &["--attachment-expiration", "1s"]);
    let server = &setup.server;
    let refused = attach(server, &[], "b", "a.txt", b"a");
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("set-cookie"), None);
    let alice = format!("Token {}", setup.token);
    let kept = attach(server, &[("Authorization", &alice)], "b", "a.txt", b"a");
    assert_eq!(kept.status, 200);
    std::thread::sleep(Duration::from_millis(1100));
    let (ok, out, err) = setup
        .store
        .run(&["cleanup", "--attachment-expiration", "1s"]);
    assert!(ok, "{err}");
    assert!(out.contains("1 expired attachments removed"), "{out}");
    let listed = server.request("GET", "/attachments/b/", &[("Authorization", &alice)], b"");
    assert_eq!(names(&listed), []);
    assert_eq!(
        server
            .request(
                "GET",
                "/attachments/b/a.txt/",
                &[("Authorization", &alice)],
                b""
            )
            .status,
        404
    );
    let uploads = server.request("GET", "/upload/", &[("Authorization", &alice)], b"");
    assert_eq!(
        uploads.json().as_array().unwrap().len(),
        0,
        "its upload went with it"
    );
}

/// A file uploaded over tus (resumable) becomes an attachment by its id;
/// one still incomplete cannot, nor can another owner's.
fn a_finished_upload_is_attached(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let data = bytes(700_000, 3);
    let create = client.send("POST", "/files/", &[TUS, ("Upload-Length", "700000")], b"");
    let path = format!("/files/{}", create.location_id());
    let half = client.send(
        "PATCH",
        &path,
        &[TUS, STREAM, ("Upload-Offset", "0")],
        &data[..300_000],
    );
    assert_eq!(half.status, 204);
    let id = create.location_id();
    let form = |fields: &[Part]| multipart(fields);
    let ctype = multipart_type();
    let by_id = |auth: &str, name: &str| {
        client.server.request(
            "POST",
            "/attachments/big/",
            &[("Authorization", auth), ("Content-Type", &ctype)],
            &form(&[Part::Text("upload", &id), Part::Text("name", name)]),
        )
    };
    assert_eq!(by_id(&client.auth, "big.bin").status, 409, "incomplete");
    let rest = client.send(
        "PATCH",
        &path,
        &[TUS, STREAM, ("Upload-Offset", "300000")],
        &data[300_000..],
    );
    assert_eq!(rest.status, 204);
    let bob = format!("Token {}", setup.store.token("bob"));
    assert_eq!(by_id(&bob, "big.bin").status, 404);
    let attached = by_id(&client.auth, "big.bin");
    assert_eq!(names(&attached), [("big.bin".to_owned(), 700_000)]);
    let file = client.get("/attachments/big/big.bin/");
    assert_eq!(file.body, data);
    assert_eq!(
        file.header("content-type"),
        Some("application/octet-stream")
    );
}

both_backends!(
    the_readme_session_works_with_curl,
    holders_never_see_each_other,
    visitors_and_expiry,
    a_finished_upload_is_attached,
);
