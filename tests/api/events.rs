//! Completion events: every upload that completes or goes is posted to the
//! webhook, signed, in order per upload, again after a failed try and
//! across a restart while the receiver is down, until the receiver has
//! accepted each exactly once; on PostgreSQL a listener hears each too.

use crate::both_backends;
use crate::common::*;
use crate::receiver::*;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::time::Duration;

const SECRET: &str = "a webhook secret of the application";

/// Answers 503 to the first `refuse` deliveries, 200 after.
fn refusing_first(refuse: usize) -> Answer {
    Box::new(move |n, delivery| {
        assert_eq!(delivery.path, "/hooks/chunkd");
        (if n < refuse { 503 } else { 200 }, String::new())
    })
}

fn key(delivery: &Delivery) -> &str {
    &delivery.headers["idempotency-key"]
}

fn signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// The keys the receiver accepted, sorted (a key twice is kept twice).
fn accepted(deliveries: &Deliveries) -> Vec<String> {
    let mut keys: Vec<String> = deliveries
        .lock()
        .unwrap()
        .iter()
        .filter(|delivery| delivery.status == 200)
        .map(|delivery| key(delivery).to_owned())
        .collect();
    keys.sort();
    keys
}

fn deliveries_failed(server: &Server) -> u64 {
    let metrics = server.request("GET", "/metrics", &[], b"").text();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("chunkd_event_deliveries_failed_total "))
        .map_or(0, |value| value.parse().unwrap())
}

fn events_reach_the_webhook_once_each(backend: Backend) {
    let deliveries = Deliveries::default();
    let receiver = Receiver::start("127.0.0.1:0", refusing_first(2), deliveries.clone());
    let receiver_addr = receiver.addr.clone();
    let hook = format!("http://{receiver_addr}/hooks/chunkd");
    let flags = ["--webhook-url", &hook, "--webhook-secret", SECRET];
    let mut setup = Setup::new(backend, &flags);
    let client = setup.client();

    let data = bytes(3000, 1);
    let done = client.upload("done.bin", &data, 1000);
    let done_id = done["id"].as_str().unwrap().to_owned();
    let delete = |id: &str| client.send("DELETE", &format!("/upload/{id}/"), &[], b"");
    assert_eq!(delete(&done_id).status, 204);
    let partial = client.put_raw("/upload/?filename=part.bin", "bytes 0-9/20", &data[..10]);
    let partial_id = partial.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(delete(&partial_id).status, 204);
    let created = client.send(
        "POST",
        "/files/",
        &[
            TUS,
            ("Upload-Length", "5"),
            ("Upload-Metadata", "filename dC50eHQ="),
        ],
        b"",
    );
    let tus_id = created.location_id();
    let patched = client.send(
        "PATCH",
        &format!("/files/{tus_id}"),
        &[TUS, STREAM, ("Upload-Offset", "0")],
        &data[..5],
    );
    assert_eq!(patched.status, 204);
    let mut expected = vec![
        format!("{done_id}.completed"),
        format!("{done_id}.deleted"),
        format!("{partial_id}.aborted"),
        format!("{tus_id}.completed"),
    ];
    expected.sort();
    eventually("the first events accepted", || {
        accepted(&deliveries) == expected
    });

    // The receiver goes down; an upload completes; the server restarts.
    receiver.stop();
    let late = client.upload("late.bin", &data[..100], 100);
    let late_id = late["id"].as_str().unwrap().to_owned();
    eventually("a delivery to the closed port failed", || {
        deliveries_failed(&setup.server) >= 3
    });
    assert!(setup
        .server
        .terminate(Duration::from_secs(10))
        .is_some_and(|status| status.success()));
    setup.server = Server::start(&setup.store, &flags);
    let receiver = Receiver::start(&receiver_addr, refusing_first(0), deliveries.clone());
    expected.push(format!("{late_id}.completed"));
    expected.sort();
    // The late event waits out its backoff (1 s, 2 s, 4 s … after each
    // failed try) before the new process tries it again.
    eventually_within(Duration::from_secs(30), "every event accepted", || {
        accepted(&deliveries) == expected
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(accepted(&deliveries), expected, "an event came twice");
    receiver.stop();

    let deliveries = deliveries.lock().unwrap();
    assert_eq!(
        deliveries
            .iter()
            .map(|d| d.status)
            .take(2)
            .collect::<Vec<_>>(),
        [503, 503]
    );
    for delivery in deliveries.iter() {
        let event = delivery.json();
        assert_eq!(
            delivery.headers["chunkd-signature"],
            signature(&delivery.body)
        );
        assert_eq!(key(delivery), event["id"]);
        assert_eq!(delivery.headers["chunkd-event"], event["event"]);
        assert_eq!(delivery.headers["content-type"], "application/json");
    }
    let first = |key: &str, status: u16| {
        deliveries
            .iter()
            .position(|d| self::key(d) == key && d.status == status)
            .unwrap()
    };
    // One upload's events in order: its deletion is posted only once its
    // completion was accepted.
    assert!(
        first(&format!("{done_id}.completed"), 200)
            < deliveries
                .iter()
                .position(|d| key(d) == format!("{done_id}.deleted"))
                .unwrap()
    );
    let completed = deliveries[first(&format!("{done_id}.completed"), 200)].json();
    assert_eq!(completed["event"], "completed");
    assert_eq!(completed["upload"]["id"], done_id.as_str());
    assert_eq!(completed["upload"]["owner"], "alice");
    assert_eq!(completed["upload"]["filename"], "done.bin");
    assert_eq!(completed["upload"]["offset"], 3000);
    assert_eq!(completed["upload"]["total"], 3000);
    assert_eq!(completed["upload"]["checksum"], md5_hex(&data).as_str());
    let tus = deliveries[first(&format!("{tus_id}.completed"), 200)].json();
    assert_eq!(tus["upload"]["metadata"], "filename dC50eHQ=");
    assert_eq!(tus["upload"]["filename"], "t.txt");
    let aborted = deliveries[first(&format!("{partial_id}.aborted"), 200)].json();
    assert_eq!(
        (&aborted["upload"]["offset"], &aborted["upload"]["total"]),
        (&Value::from(10), &Value::from(20))
    );
}

/// Two processes on one database deliver each event once between them.
fn processes_share_the_deliveries(backend: Backend) {
    let deliveries = Deliveries::default();
    let receiver = Receiver::start("127.0.0.1:0", refusing_first(0), deliveries.clone());
    let hook = format!("http://{}/hooks/chunkd", receiver.addr);
    let flags = ["--webhook-url", &hook, "--webhook-secret", SECRET];
    let setup = Setup::new(backend, &flags);
    let other = Server::start(&setup.store, &flags);
    let clients = [setup.client(), Client::new(&other, &setup.token)];
    let mut expected = Vec::new();
    for round in 0..20 {
        let data = bytes(100, round);
        let done = clients[round as usize % 2].upload("f.bin", &data, 50);
        expected.push(format!("{}.completed", done["id"].as_str().unwrap()));
    }
    expected.sort();
    eventually("every event accepted", || accepted(&deliveries) == expected);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(accepted(&deliveries), expected, "an event came twice");
    receiver.stop();
}

both_backends!(
    events_reach_the_webhook_once_each,
    processes_share_the_deliveries
);

/// `LISTEN chunkd_events` hears each event, sent when its transaction
/// commits.
#[test]
fn postgres_listeners_hear_each_event() {
    use diesel::connection::SimpleConnection;
    use diesel::{Connection, PgConnection};
    let setup = Setup::new(Backend::Postgres, &[]);
    let url = setup.store.pg.as_ref().unwrap().url();
    let mut listener = PgConnection::establish(&url).unwrap();
    listener.batch_execute("LISTEN chunkd_events").unwrap();
    let client = setup.client();
    let done = client.upload("heard.bin", &bytes(10, 3), 10);
    let id = done["id"].as_str().unwrap().to_owned();
    let mut heard = Vec::new();
    eventually("the notification", || {
        for notification in listener.notifications_iter() {
            let notification = notification.unwrap();
            assert_eq!(notification.channel, "chunkd_events");
            heard.push(serde_json::from_str::<Value>(&notification.payload).unwrap());
        }
        !heard.is_empty()
    });
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert_eq!(heard[0]["event"], "completed");
    assert_eq!(heard[0]["upload_id"], id.as_str());
    assert!(heard[0]["seq"].as_i64().is_some());
}
