//! Expiry: 410 on PUT and POST, GET still answers, `chunkd cleanup` (or
//! the server's own periodic sweep) removes row and file together.

use crate::both_backends;
use crate::common::*;
use serde_json::json;
use std::time::Duration;

fn expired_uploads_answer_gone_and_are_cleaned_up(backend: Backend) {
    let setup = Setup::new(backend, &["--expiration", "1s"]);
    let client = setup.client();
    let old = client.put_chunk("/upload/", "bytes 0-3/8", Some("old.bin"), b"abcd");
    let old_id = old.json()["id"].as_str().unwrap().to_owned();
    let done = client.upload("kept.bin", b"kept", 4);
    let created =
        chrono::DateTime::parse_from_rfc3339(old.json()["created_at"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(old.json()["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires - created, chrono::TimeDelta::seconds(1));
    std::thread::sleep(Duration::from_millis(1100));

    let path = format!("/upload/{old_id}/");
    let gone = json!({"detail": "Upload has expired"});
    let put = client.put_chunk(&path, "bytes 4-7/8", None, b"efgh");
    assert_eq!((put.status, put.json()), (410, gone.clone()));
    let post = client.complete(&old_id, &md5_hex(b"abcdefgh"));
    assert_eq!((post.status, post.json()), (410, gone));
    let get = client.get(&path);
    assert_eq!(get.status, 200);
    assert_eq!(get.json()["offset"], 4);
    // A completed upload does not expire.
    let done_id = done["id"].as_str().unwrap();
    assert_eq!(client.complete(done_id, &md5_hex(b"kept")).status, 200);

    let (ok, out, err) = setup.store.run(&["cleanup"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("removed {old_id} \"old.bin\" (4 of 8 bytes")),
        "{out}"
    );
    assert!(out.contains("1 expired uploads removed"), "{out}");
    assert_eq!(client.get(&path).status, 404);
    assert_eq!(
        setup.store.part_files(),
        vec![(format!("{done_id}.done"), 4)]
    );
    let (ok, out, _) = setup.store.run(&["cleanup"]);
    assert!(ok);
    assert!(out.contains("0 expired uploads removed"), "{out}");
}

fn the_server_sweeps_expired_uploads_by_itself(backend: Backend) {
    let setup = Setup::new(backend, &["--expiration", "1s", "--cleanup-interval", "1s"]);
    let client = setup.client();
    let old = client.put_chunk("/upload/", "bytes 0-3/8", Some("old.bin"), b"abcd");
    let path = format!("/upload/{}/", old.json()["id"].as_str().unwrap());
    let done = client.upload("kept.bin", b"kept", 4);
    let done_id = done["id"].as_str().unwrap();
    let kept = vec![(format!("{done_id}.done"), 4)];
    let logged = || {
        std::fs::read_to_string(&setup.server.log)
            .unwrap()
            .contains("expired, removed")
    };
    // The row goes first, then the part file, then the log line.
    eventually("the expired upload removed and logged", || {
        client.get(&path).status == 404 && setup.store.part_files() == kept && logged()
    });
}

both_backends!(
    expired_uploads_answer_gone_and_are_cleaned_up,
    the_server_sweeps_expired_uploads_by_itself
);
