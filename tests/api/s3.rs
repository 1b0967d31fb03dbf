//! Uploads in a bucket of the S3 emulator, with S3's real 5 MiB minimum
//! part size: processes that share no disk continue each other's uploads,
//! one killed mid-chunk; chunks race across processes; the emulator goes
//! away mid-chunk, after parts of it were accepted.

use crate::common::*;
use std::time::Duration;

const TUS: (&str, &str) = ("Tus-Resumable", "1.0.0");
const MIB: usize = 1 << 20;
/// A lease of a killed process ends soon; a request waits for it.
const FLAGS: &[&str] = &[
    "--s3-part-size",
    "5MiB",
    "--lease-time",
    "2s",
    "--lock-timeout",
    "8s",
];

fn range(start: usize, len: usize, total: usize) -> String {
    format!("bytes {start}-{}/{total}", start + len - 1)
}

/// Multipart uploads begun in a bucket and neither completed nor aborted.
fn open_multipart_uploads(bucket: &str) -> usize {
    let out = std::process::Command::new("curl")
        .arg("-sf")
        .arg(format!("{}/{bucket}?uploads", emulator()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .matches("<Upload>")
        .count()
}

/// Servers on `store` and on two replicas of it: three processes, each
/// with its own data directory, one database, one bucket.
fn three_servers(store: &Store) -> ([Store; 2], Vec<Server>) {
    let replicas = [store.replica(), store.replica()];
    let servers = [store, &replicas[0], &replicas[1]]
        .iter()
        .map(|store| Server::start(store, FLAGS))
        .collect();
    (replicas, servers)
}

/// Of an upload, only its completed object is in the bucket, and no
/// multipart upload is left open.
fn only_the_object_is_left(store: &Store, id: &str, len: usize) {
    assert_eq!(store.part_files(), vec![(format!("{id}.done"), len as u64)]);
    assert_eq!(open_multipart_uploads(&store.s3.as_ref().unwrap().name), 0);
}

/// A store whose servers reach the emulator through a proxy, and a token.
fn behind_a_proxy() -> (Proxy, Store, String) {
    let proxy = Proxy::start();
    let mut store = Store::new(Backend::S3);
    store.s3.as_mut().unwrap().endpoint = proxy.endpoint.clone();
    let token = store.token("alice");
    (proxy, store, token)
}

/// Three `chunkd serve` processes, each with its own data directory, one
/// database, one bucket. Each chunk of a 24 MiB upload (3 MiB chunks, so
/// 5 MiB parts fill from stored tails) goes to the next process; the one
/// receiving the fifth chunk is killed with half of it sent, and another
/// process takes the chunk again from the committed offset; the completion
/// goes to a process that received no chunk of the end. The bytes and MD5
/// from every live process equal the file; only the object is left.
#[test]
fn processes_without_a_shared_disk_continue_each_others_uploads() {
    let store = Store::new(Backend::S3);
    let token = store.token("alice");
    let auth = format!("Token {token}");
    let (_replicas, servers) = three_servers(&store);
    let mut killed = None;
    let chunk = 3 * MIB;
    let total = 8 * chunk;
    let data = bytes(total, 27);
    let client = |n: usize| Client::new(&servers[n], &token);
    let first = client(0).put_raw(
        "/upload/?filename=spread.bin",
        &range(0, chunk, total),
        &data[..chunk],
    );
    assert_eq!(first.status, 200, "{}", first.text());
    let id = first.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/upload/{id}/");
    for n in 1..8 {
        let start = n * chunk;
        let mut to = n % 3;
        if n == 4 {
            let broken = partial_request(
                &servers[to],
                "PUT",
                &path,
                &[
                    ("Authorization", &auth),
                    ("Content-Range", &range(start, chunk, total)),
                    ("Content-Type", "application/octet-stream"),
                ],
                chunk as u64,
                &data[start..start + chunk / 2],
            );
            std::thread::sleep(Duration::from_millis(300));
            run(std::process::Command::new("kill").args(["-9", &servers[to].pid().to_string()]));
            killed = Some(to);
            drop(broken);
            to = 2;
            assert_eq!(client(to).get(&path).json()["offset"], start);
        }
        if killed == Some(to) {
            to = 2;
        }
        let put = client(to).put_raw(
            &path,
            &range(start, chunk, total),
            &data[start..start + chunk],
        );
        assert_eq!(put.status, 200, "chunk {n}: {}", put.text());
        assert_eq!(put.json()["offset"], start + chunk);
    }
    let done = client(0).complete(&id, &md5_hex(&data));
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(done.json()["md5"], md5_hex(&data));
    for n in [0, 2] {
        let file = client(n).get(&format!("{path}file"));
        assert_eq!(file.status, 200);
        assert!(file.body == data, "the bytes from process {n} differ");
    }
    only_the_object_is_left(&store, &id, total);
}

/// Eight clients spread over three processes race different bytes at the
/// same offset, round after round: exactly one wins each round, and the
/// object holds exactly the winners' bytes.
#[test]
fn chunks_racing_across_processes_one_wins_each_round() {
    let store = Store::new(Backend::S3);
    let token = store.token("alice");
    let (_replicas, servers) = three_servers(&store);
    let clients: Vec<Client> = servers.iter().map(|s| Client::new(s, &token)).collect();
    race_rounds(&clients, 8, 2 * MIB, 6);
}

/// The emulator goes away while a 24 MiB PATCH is being stored, after
/// parts of it were accepted: the PATCH fails, readiness turns 503, the
/// offset stays where it was acknowledged. Once the emulator is back the
/// upload resumes from there and completes with the file's bytes, and its
/// in-progress objects are gone.
#[test]
fn the_emulator_going_away_mid_chunk_loses_nothing_acknowledged() {
    let (proxy, store, token) = behind_a_proxy();
    let server = Server::start(&store, FLAGS);
    let client = Client::new(&server, &token);
    let total = 30 * MIB;
    let data = bytes(total, 31);
    let created = client.send(
        "POST",
        "/files/",
        &[TUS, ("Upload-Length", &total.to_string())],
        b"",
    );
    assert_eq!(created.status, 201);
    let location = created.header("location").unwrap().to_owned();
    let path = location.trim_start_matches(&server.url(""));
    let patch = |offset: usize, body: &[u8]| {
        client.send(
            "PATCH",
            path,
            &[
                TUS,
                ("Upload-Offset", &offset.to_string()),
                ("Content-Type", "application/offset+octet-stream"),
            ],
            body,
        )
    };
    let acknowledged = 6 * MIB;
    assert_eq!(patch(0, &data[..acknowledged]).status, 204);
    let before = proxy.sent();
    let failed = std::thread::scope(|scope| {
        let patching = scope.spawn(|| patch(acknowledged, &data[acknowledged..]));
        // Two parts of this PATCH in the bucket, then the emulator is gone.
        eventually_within(Duration::from_secs(60), "parts accepted", || {
            proxy.sent() > before + 12 * MIB as u64
        });
        proxy.cut();
        patching.join().unwrap()
    });
    assert!(failed.status >= 500, "{} {}", failed.status, failed.text());
    assert_eq!(client.get("/readyz").status, 503);
    let head = client.send("HEAD", path, &[TUS], b"");
    assert_eq!(
        head.header("upload-offset"),
        Some(acknowledged.to_string().as_str())
    );

    proxy.restore();
    assert_eq!(client.get("/readyz").status, 200);
    let head = client.send("HEAD", path, &[TUS], b"");
    let offset: usize = head.header("upload-offset").unwrap().parse().unwrap();
    assert_eq!(offset, acknowledged);
    assert_eq!(patch(offset, &data[offset..]).status, 204);
    let id = path.rsplit('/').next().unwrap();
    let file = client.get(&format!("/upload/{id}/file"));
    assert_eq!(md5_hex(&file.body), md5_hex(&data));
    only_the_object_is_left(&store, id, total);
}

/// DELETE of an upload in progress with parts in the bucket, and expiry
/// of another, abort their multipart uploads and delete every object.
#[test]
fn delete_and_expiry_leave_nothing_in_the_bucket() {
    let store = Store::new(Backend::S3);
    let token = store.token("alice");
    let server = Server::start(&store, &["--s3-part-size", "5MiB", "--expiration", "3s"]);
    let client = Client::new(&server, &token);
    let total = 16 * MIB;
    let data = bytes(total, 41);
    let mut paths = Vec::new();
    for name in ["deleted.bin", "expired.bin"] {
        let open = client.put_raw(
            &format!("/upload/?filename={name}"),
            &range(0, 11 * MIB, total),
            &data[..11 * MIB],
        );
        assert_eq!(open.status, 200, "{}", open.text());
        paths.push(format!("/upload/{}/", open.json()["id"].as_str().unwrap()));
    }
    let bucket = store.s3.as_ref().unwrap().name.clone();
    assert_eq!(open_multipart_uploads(&bucket), 2);
    assert_eq!(client.send("DELETE", &paths[0], &[], b"").status, 204);
    assert_eq!(open_multipart_uploads(&bucket), 1);
    std::thread::sleep(Duration::from_secs(4));
    let (ok, out, err) = store.run(&["cleanup", "--s3-part-size", "5MiB"]);
    assert!(ok, "{out}{err}");
    assert_eq!(client.get(&paths[1]).status, 404);
    assert_eq!(store.part_files(), vec![]);
    assert_eq!(open_multipart_uploads(&bucket), 0);
}

/// How many times a byte goes to the bucket when it comes in 1 MiB chunks
/// (default 8 MiB parts): once as a tail piece, for the chunks that do not
/// fill a part, and once in its part; with the state objects and request
/// heads, under twice. Counted at a proxy in front of the emulator.
#[test]
fn one_mib_chunks_are_written_to_the_bucket_less_than_twice() {
    let (proxy, store, token) = behind_a_proxy();
    let server = Server::start(&store, &[]);
    let client = Client::new(&server, &token);
    let total = 40 * MIB;
    let data = bytes(total, 43);
    let before = proxy.sent();
    let first = client.put_raw(
        "/upload/?filename=one.bin",
        &range(0, MIB, total),
        &data[..MIB],
    );
    let id = first.json()["id"].as_str().unwrap().to_owned();
    for start in (MIB..total).step_by(MIB) {
        let put = client.put_raw(
            &format!("/upload/{id}/"),
            &range(start, MIB, total),
            &data[start..start + MIB],
        );
        assert_eq!(put.status, 200, "{}", put.text());
    }
    let done = client.complete(&id, &md5_hex(&data));
    assert_eq!(done.status, 200, "{}", done.text());
    let written = (proxy.sent() - before) as f64 / total as f64;
    eprintln!("each byte of 1 MiB chunks went to the bucket {written:.3} times");
    assert!(written < 2.0, "{written:.3} times");
    assert!(written > 1.0);
}
