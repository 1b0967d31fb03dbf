//! The pre-create hook: the application accepts a new upload (attaching
//! metadata), refuses it with its own status and message, and a hook that
//! does not answer refuses new uploads with 503; a refused upload leaves
//! nothing behind.

use crate::both_backends;
use crate::common::*;
use crate::receiver::*;
use serde_json::json;

/// Refuses files named `secret…` with 403; accepts the rest and tags them
/// with a project.
fn application() -> Answer {
    Box::new(|_, asked| {
        let ask = asked.json();
        if ask["filename"].as_str().unwrap().starts_with("secret") {
            (403, "No secrets here, please.".into())
        } else {
            (200, json!({"metadata": {"project": "apollo"}}).to_string())
        }
    })
}

fn the_application_admits_new_uploads(backend: Backend) {
    let asked = Deliveries::default();
    let receiver = Receiver::start("127.0.0.1:0", application(), asked.clone());
    let hook = format!("http://{}/admit", receiver.addr);
    let setup = Setup::new(backend, &["--hook-url", &hook]);
    let client = setup.client();
    let data = bytes(10, 4);

    let refused = client.put_raw("/upload/?filename=secret.txt", "bytes 0-9/10", &data);
    assert_eq!(
        (refused.status, refused.json()),
        (403, json!({"detail": "No secrets here, please."}))
    );
    let tus_refused = client.send(
        "POST",
        "/files/",
        &[
            TUS,
            ("Upload-Length", "5"),
            ("Upload-Metadata", "filename c2VjcmV0LnR4dA=="),
        ],
        b"",
    );
    assert_eq!(
        (tus_refused.status, tus_refused.text()),
        (403, "No secrets here, please.".to_owned())
    );
    assert_eq!(client.get("/upload/").json(), json!([]));
    eventually("nothing left of the refused uploads", || {
        setup.store.part_files().is_empty()
    });

    // Accepted, with the application's metadata over the client's.
    let created = client.send(
        "POST",
        "/files/",
        &[
            TUS,
            ("Upload-Length", "5"),
            ("Upload-Metadata", "filename b2sudHh0,project bWluZQ=="),
        ],
        b"",
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let head = client.send(
        "HEAD",
        &format!("/files/{}", created.location_id()),
        &[TUS],
        b"",
    );
    assert_eq!(
        head.header("upload-metadata"),
        Some("filename b2sudHh0,project YXBvbGxv")
    );
    let done = client.upload("ok.bin", &data, 5);
    assert_eq!(done["status"], 2, "{done}");
    {
        let asked = asked.lock().unwrap();
        let tus = asked
            .iter()
            .map(Delivery::json)
            .find(|ask| ask["filename"] == "ok.txt")
            .unwrap();
        assert_eq!(
            tus,
            json!({"owner": "alice", "filename": "ok.txt", "total": 5,
                   "metadata": "filename b2sudHh0,project bWluZQ=="})
        );
        assert!(asked
            .iter()
            .all(|d| d.path == "/admit" && d.headers["content-type"] == "application/json"));
    }

    // No answer: new uploads wait for the application.
    receiver.stop();
    let unanswered = client.put_raw("/upload/?filename=later.bin", "bytes 0-9/10", &data);
    assert_eq!(unanswered.status, 503, "{}", unanswered.text());
    assert_eq!(client.get("/upload/").json().as_array().unwrap().len(), 2);
}

both_backends!(the_application_admits_new_uploads);
