//! Hostile clients: trickling bodies, stalled headers, huge headers, absurd
//! sizes, floods. Each gets a clear answer and stores nothing.

use crate::both_backends;
use crate::common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn a_byte_a_second_is_cut_off(backend: Backend) {
    let setup = Setup::new(backend, &["--read-timeout", "1s"]);
    let client = setup.client();
    let created = client.put_raw("/upload/?filename=t.bin", "bytes 0-9/200010", b"0123456789");
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/upload/{id}/");
    let mut trickle = partial_request(
        &setup.server,
        "PUT",
        &path,
        &[
            ("Authorization", &client.auth),
            ("Content-Range", "bytes 10-200009/200010"),
        ],
        200_000,
        b"x",
    );
    let started = Instant::now();
    let mut cut = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(100));
        if trickle.write_all(b"x").is_err() {
            cut = true;
            break;
        }
    }
    let answer = try_read_response(trickle);
    assert!(
        cut || answer.is_ok(),
        "the trickling client was not cut off"
    );
    if let Ok(resp) = answer {
        assert_eq!(
            (resp.status, resp.json()),
            (
                408,
                json!({"detail": "Timed out waiting for the request body"})
            )
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "cut off after {:?}",
        started.elapsed()
    );
    assert_eq!(client.get(&path).json()["offset"], 10);
    eventually("the trickle is cut off the part file", || {
        setup.store.part_files() == vec![(format!("{id}.part"), 10)]
    });
    // The lock is free again.
    let next = client.put_raw(&path, "bytes 10-200009/200010", &vec![b'y'; 200_000]);
    assert_eq!(next.status, 200, "{}", next.text());
}

fn stalled_headers_are_dropped(backend: Backend) {
    let setup = Setup::new(backend, &["--read-timeout", "1s"]);
    let mut stream = connect(&setup.server.addr);
    stream
        .write_all(b"PUT /upload/ HTTP/1.1\r\nHost: x\r\nContent-Ra")
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "held for {:?}",
        started.elapsed()
    );
    assert_eq!(setup.client().get("/upload/").status, 200);
}

fn huge_headers_and_sizes_store_nothing(backend: Backend) {
    let setup = Setup::new(backend, &["--max-bytes", "1GiB"]);
    let client = setup.client();
    let huge = "a".repeat(10 << 20);
    let resp = try_request(
        &setup.server.addr,
        "PUT",
        "/upload/?filename=h.bin",
        &[
            ("Authorization", &client.auth),
            ("Content-Range", "bytes 0-0/1"),
            ("X-Huge", &huge),
        ],
        b"h",
    );
    if let Ok(resp) = resp {
        assert!([400, 413, 431].contains(&resp.status), "{}", resp.status);
    }
    let terabyte = client.put_raw("/upload/?filename=t.bin", "bytes 0-0/1000000000000", b"t");
    assert_eq!(
        (terabyte.status, terabyte.json()),
        (
            400,
            json!({"detail": "Size of file exceeds the limit (1073741824 bytes)"})
        )
    );
    for range in [
        "bytes -1-0/1",
        "bytes 0--1/1",
        "bytes 0-0/-1",
        "bytes 0-0/18446744073709551616",
        "bytes 0x0-1/2",
    ] {
        let resp = client.put_raw("/upload/?filename=n.bin", range, b"n");
        assert_eq!(
            (resp.status, resp.json()),
            (400, json!({"detail": "Error in request headers"})),
            "{range}"
        );
    }
    let longer = client.put_raw("/upload/?filename=l.bin", "bytes 0-0/1", b"two");
    assert_eq!(
        longer.json(),
        json!({"detail": "File size doesn't match headers: file size is 3 but 1 reported"})
    );
    assert!(setup.store.part_files().is_empty());
    assert_eq!(client.get("/upload/").json(), json!([]));

    // Without a configured limit, the largest size a row can hold is the limit.
    let unlimited = Setup::new(backend, &[]);
    let resp = unlimited.client().put_raw(
        "/upload/?filename=x.bin",
        "bytes 0-0/9223372036854775808",
        b"x",
    );
    assert_eq!(
        resp.json(),
        json!({"detail": "Size of file exceeds the limit (9223372036854775807 bytes)"})
    );
}

fn requests_past_the_cap_get_503(backend: Backend) {
    let setup = Setup::new(backend, &["--max-requests", "2", "--lock-timeout", "1s"]);
    let client = setup.client();
    let mut held = Vec::new();
    for name in ["a", "b"] {
        held.push(partial_request(
            &setup.server,
            "PUT",
            &format!("/upload/?filename={name}.bin"),
            &[
                ("Authorization", &client.auth),
                ("Content-Range", "bytes 0-9/10"),
            ],
            10,
            b"01234",
        ));
    }
    std::thread::sleep(Duration::from_millis(300));
    let refused = client.get("/upload/");
    assert_eq!(
        (refused.status, refused.json()),
        (503, json!({"detail": "Server busy, retry later"}))
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    for mut stream in held {
        stream.write_all(b"56789").unwrap();
        assert_eq!(read_response(stream).status, 200);
    }
    assert_eq!(client.get("/upload/").json().as_array().unwrap().len(), 2);
    let metrics = client.get("/metrics").text();
    assert!(
        metrics.contains("\nchunkd_requests_refused_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "\nchunkd_requests_total{protocol=\"chunked\",method=\"GET\",status=\"503\"} 1\n"
        ),
        "{metrics}"
    );
}

both_backends!(
    a_byte_a_second_is_cut_off,
    stalled_headers_are_dropped,
    huge_headers_and_sizes_store_nothing,
    requests_past_the_cap_get_503,
);
