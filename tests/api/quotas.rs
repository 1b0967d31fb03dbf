//! Per-owner limits: `--quota-bytes` (413) and `--max-uploads-in-progress`
//! (429), each with a message naming the limit; a refused creation leaves
//! nothing; owners are counted apart; concurrent creations cannot pass the
//! quota together; `chunkd usage` shows what each owner holds.

use crate::both_backends;
use crate::common::*;
use serde_json::json;

/// A tus creation of `len` bytes, carrying `body` (all of them, or none).
fn tus_create(client: &Client, len: usize, body: &[u8]) -> Response {
    let len = len.to_string();
    let mut headers = vec![TUS, ("Upload-Length", len.as_str())];
    if !body.is_empty() {
        headers.push(STREAM);
    }
    client.send("POST", "/files/", &headers, body)
}

fn quotas_hold_per_owner(backend: Backend) {
    let setup = Setup::new(
        backend,
        &["--quota-bytes", "1000", "--max-uploads-in-progress", "2"],
    );
    let alice = setup.client();
    let data = bytes(600, 3);
    let first = alice.put_raw("/upload/?filename=a.bin", "bytes 0-99/600", &data[..100]);
    assert_eq!(first.status, 200, "{}", first.text());
    let id = first.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(tus_create(&alice, 300, b"").status, 201);

    // A third upload in progress: 429, whatever its size.
    let third = tus_create(&alice, 1, b"");
    assert_eq!(third.status, 429, "{}", third.text());
    assert_eq!(third.text(), "too many uploads in progress: 2 at most");
    let third = alice.put_raw("/upload/?filename=c.bin", "bytes 0-0/1", b"c");
    assert_eq!(
        (third.status, third.json()),
        (
            429,
            json!({"detail": "too many uploads in progress: 2 at most"})
        )
    );

    // Once one completes, there is room for one more in progress, but
    // not for more bytes than the quota has left.
    let path = format!("/upload/{id}/");
    assert_eq!(
        alice
            .put_raw(&path, "bytes 100-599/600", &data[100..])
            .status,
        200
    );
    assert_eq!(alice.complete(&id, &md5_hex(&data)).status, 200);
    let over = alice.put_raw("/upload/?filename=d.bin", "bytes 0-9/200", &data[..10]);
    assert_eq!(
        (over.status, over.json()),
        (
            413,
            json!({"detail": "storage quota exceeded: 900 of 1000 bytes in use, 200 more asked"})
        )
    );
    let over = tus_create(&alice, 101, &bytes(101, 4));
    assert_eq!(over.status, 413, "{}", over.text());
    assert_eq!(alice.get("/upload/").json().as_array().unwrap().len(), 2);
    eventually("the refused bodies leave no file", || {
        setup.store.part_files().len() == 2
    });
    // Exactly up to the quota is allowed.
    assert_eq!(tus_create(&alice, 100, &bytes(100, 5)).status, 201);

    // Another owner has a quota of its own.
    let bob_token = setup.store.token("bob");
    let bob = Client::new(&setup.server, &bob_token);
    assert_eq!(tus_create(&bob, 600, b"").status, 201);

    let (ok, out, err) = setup.store.run(&["usage"]);
    assert!(ok, "{err}");
    assert_eq!(out, "alice\t3\t1\t1000\nbob\t1\t1\t600\n");
}

/// Twenty creations of 100 bytes at once, each in one request, against a
/// quota of 1,000 bytes: exactly ten get in, whichever they are; for five
/// owners in turn, so that a race the quota loses shows in every run.
fn concurrent_creations_stay_within_the_quota(backend: Backend) {
    let setup = Setup::new(backend, &["--quota-bytes", "1000"]);
    let mut expected = String::new();
    for owner in ["o1", "o2", "o3", "o4", "o5"] {
        let token = setup.store.token(owner);
        let statuses: Vec<u16> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..20)
                .map(|n| {
                    let client = Client::new(&setup.server, &token);
                    scope.spawn(move || tus_create(&client, 100, &bytes(100, n)).status)
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let created = statuses.iter().filter(|&&s| s == 201).count();
        let refused = statuses.iter().filter(|&&s| s == 413).count();
        assert_eq!((created, refused), (10, 10), "{owner}: {statuses:?}");
        expected.push_str(&format!("{owner}\t10\t0\t1000\n"));
    }
    let (ok, out, err) = setup.store.run(&["usage"]);
    assert!(ok, "{err}");
    assert_eq!(out, expected);
}

both_backends!(
    quotas_hold_per_owner,
    concurrent_creations_stay_within_the_quota
);
