//! Two server processes sharing one database and one data directory (as
//! behind a load balancer) never interleave requests on one upload.

use crate::both_backends;
use crate::common::*;
use std::io::Write;
use std::time::Duration;

struct Pair {
    setup: Setup,
    other: Server,
}

impl Pair {
    fn new(backend: Backend, flags: &[&str]) -> Self {
        let setup = Setup::new(backend, flags);
        let other = Server::start(&setup.store, flags);
        Pair { setup, other }
    }

    /// A client on each server, alternately.
    fn clients(&self) -> [Client<'_>; 2] {
        [
            self.setup.client(),
            Client::new(&self.other, &self.setup.token),
        ]
    }
}

/// 16 clients, half on each server, race different bytes at the same
/// offset, round after round: exactly one wins each round.
fn sixteen_clients_race_each_chunk(backend: Backend) {
    let pair = Pair::new(backend, &["--lock-timeout", "5s"]);
    race_rounds(&pair.clients(), 16, 64 * 1024, 6);
}

/// A chunk still arriving on one server while the other is asked to
/// complete, abort or clean up the upload.
fn a_chunk_in_flight_blocks_complete_delete_and_cleanup(backend: Backend) {
    let pair = Pair::new(backend, &["--lock-timeout", "500ms", "--expiration", "2s"]);
    let [first, second] = pair.clients();
    let data = bytes(200_000, 5);
    let created = first.put_raw(
        "/upload/?filename=f.bin",
        "bytes 0-99999/200000",
        &data[..100_000],
    );
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/upload/{id}/");
    let mut held = partial_request(
        &pair.setup.server,
        "PUT",
        &path,
        &[
            ("Authorization", &first.auth),
            ("Content-Range", "bytes 100000-199999/200000"),
        ],
        100_000,
        &data[100_000..150_000],
    );
    std::thread::sleep(Duration::from_millis(300));
    for resp in [
        second.complete(&id, &md5_hex(&data)),
        second.send("DELETE", &path, &[], b""),
        second.put_raw(&path, "bytes 100000-199999/200000", &data[100_000..]),
    ] {
        assert_eq!(resp.status, 409, "{}", resp.text());
        assert_eq!(resp.json()["offset"], 100_000);
    }
    // The upload expires while the chunk is still arriving: clean-up leaves it.
    std::thread::sleep(Duration::from_millis(2000));
    let (ok, out, _) = pair.setup.store.run(&["cleanup"]);
    assert!(ok);
    assert!(out.contains("0 expired uploads removed"), "{out}");
    held.write_all(&data[150_000..]).unwrap();
    let resp = read_response(held);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(second.get(&path).json()["offset"], 200_000);
    // Now idle and expired: clean-up removes row and file together.
    let (_, out, _) = pair.setup.store.run(&["cleanup"]);
    assert!(out.contains("1 expired uploads removed"), "{out}");
    assert_eq!(first.get(&path).status, 404);
    assert!(pair.setup.store.part_files().is_empty());
}

/// PUT and POST, PUT and DELETE, sent at once to the two servers: whatever
/// the order, the end state is one of the consistent ones.
fn put_racing_post_and_delete(backend: Backend) {
    let pair = Pair::new(backend, &["--lock-timeout", "5s"]);
    let [first, second] = pair.clients();
    let data = bytes(400_000, 6);
    for round in 0..4 {
        let created = first.put_raw(
            "/upload/?filename=r.bin",
            "bytes 0-199999/400000",
            &data[..200_000],
        );
        let id = created.json()["id"].as_str().unwrap().to_owned();
        let path = format!("/upload/{id}/");
        let (put, other) = std::thread::scope(|scope| {
            let put = scope.spawn(|| {
                first
                    .put_raw(&path, "bytes 200000-399999/400000", &data[200_000..])
                    .status
            });
            let other = scope.spawn(|| {
                if round % 2 == 0 {
                    second.complete(&id, &md5_hex(&data)).status
                } else {
                    second.send("DELETE", &path, &[], b"").status
                }
            });
            (put.join().unwrap(), other.join().unwrap())
        });
        if round % 2 == 0 {
            // POST first: incomplete (400), the PUT then lands; PUT first: 200 both.
            assert_eq!(put, 200);
            assert!([200, 400].contains(&other), "{other}");
            assert_eq!(second.complete(&id, &md5_hex(&data)).status, 200);
            assert_eq!(first.get(&format!("{path}file")).body, data);
        } else {
            // DELETE first: the PUT finds nothing (404); PUT first: both succeed.
            assert_eq!(other, 204);
            assert!([200, 404].contains(&put), "{put}");
            assert_eq!(first.get(&path).status, 404);
            let leftovers: Vec<_> = pair
                .setup
                .store
                .part_files()
                .into_iter()
                .filter(|(name, _)| name.starts_with(&id))
                .collect();
            assert!(leftovers.is_empty(), "{leftovers:?}");
        }
    }
}

/// Chunks alternate between the servers, so each chunk lands where the
/// hash of the one before it may still be running on the other server (or
/// was saved only as far as it had got): the upload completes, on either
/// server, with the MD5 of all its bytes: in round 0 on the server that took
/// the last chunk (and kept its hash feed), in round 1 on the other one
/// (from the saved state, caught up from the part file). Without that
/// catch-up this test fails.
fn chunks_alternate_between_servers(backend: Backend) {
    let pair = Pair::new(backend, &[]);
    let clients = pair.clients();
    let chunk = 1 << 20;
    for round in 0..2 {
        let data = bytes(6 * chunk + 12_345, round);
        let total = data.len();
        let mut id = String::new();
        for (n, start) in (0..total).step_by(chunk).enumerate() {
            let end = (start + chunk).min(total);
            let path = match start {
                0 => "/upload/?filename=alternate.bin".to_owned(),
                _ => format!("/upload/{id}/"),
            };
            let range = format!("bytes {start}-{}/{total}", end - 1);
            let resp = clients[n % 2].put_raw(&path, &range, &data[start..end]);
            assert_eq!(resp.status, 200, "{}", resp.text());
            assert_eq!(resp.json()["offset"], end as u64);
            id = resp.json()["id"].as_str().unwrap().to_owned();
        }
        let completer = &clients[round as usize];
        let wrong = completer.complete(&id, &md5_hex(b"other bytes"));
        assert_eq!(wrong.status, 400, "{}", wrong.text());
        let done = completer.complete(&id, &md5_hex(&data));
        assert_eq!(done.status, 200, "{}", done.text());
        assert_eq!(done.json()["md5"], md5_hex(&data));
        let path = format!("/upload/{id}/file");
        assert_eq!(clients[1 - round as usize].get(&path).body, data);
    }
}

/// Servers open database connections when they need them and never more
/// than `--db-connections` (and the few of leases): several processes on
/// one PostgreSQL must not exhaust its `max_connections`. 16 uploads at
/// once, half on each server, all complete meanwhile.
#[test]
fn database_connections_are_opened_when_needed_and_capped() {
    let cap = 2;
    let pair = Pair::new(Backend::Postgres, &["--db-connections", &cap.to_string()]);
    let pg = pair.setup.store.pg.as_ref().unwrap();
    let at_rest = pg.connections();
    // Each server keeps the connection it migrated with; a pool opened in
    // full would hold 2 × (2 + 4).
    assert!(at_rest <= 2, "{at_rest} connections open at rest");
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let peak = AtomicUsize::new(at_rest);
    let uploading = AtomicBool::new(true);
    let clients = pair.clients();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while uploading.load(Ordering::Relaxed) {
                peak.fetch_max(pg.connections(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let uploads: Vec<_> = (0..16u64)
            .map(|n| {
                let client = &clients[n as usize % 2];
                scope.spawn(move || {
                    let data = bytes(4 * 65_536 + 77, n);
                    let done = client.upload("capped.bin", &data, 65_536);
                    assert_eq!(done["md5"], md5_hex(&data));
                })
            })
            .collect();
        let outcomes: Vec<_> = uploads.into_iter().map(|upload| upload.join()).collect();
        // The sampler stops before any failure is raised, or the scope
        // would wait for it forever.
        uploading.store(false, Ordering::Relaxed);
        for outcome in outcomes {
            outcome.unwrap();
        }
    });
    let peak = peak.into_inner();
    assert!(peak > at_rest, "the uploads opened no connection: {peak}");
    assert!(peak <= 2 * (cap + 4), "{peak} connections open at once");
}

both_backends!(
    chunks_alternate_between_servers,
    sixteen_clients_race_each_chunk,
    a_chunk_in_flight_blocks_complete_delete_and_cleanup,
    put_racing_post_and_delete,
);
