//! Many uploads at once: more than the segment budget can serve together.

use crate::both_backends;
use crate::common::*;

const MIB: usize = 1 << 20;
const UPLOADS: usize = 128;

/// 128 uploads send their chunks at once, each bigger than a write group,
/// so that together they want far more segments than the process holds:
/// every one still finishes, none waits for another forever.
fn more_uploads_at_once_than_segments_all_finish(backend: Backend) {
    let store = Store::new(backend);
    let token = store.token("alice");
    let server = Server::start(&store, &[]);
    let client = Client::new(&server, &token);
    let data: Vec<Vec<u8>> = (0..UPLOADS).map(|n| bytes(2 * MIB, n as u64)).collect();
    let send_all = |paths: &[String], half: usize| -> Vec<Response> {
        std::thread::scope(|scope| {
            let sends: Vec<_> = paths
                .iter()
                .zip(&data)
                .map(|(path, data)| {
                    let client = &client;
                    scope.spawn(move || {
                        let (start, end) = (half * MIB, (half + 1) * MIB);
                        let range = format!("bytes {start}-{}/{}", end - 1, 2 * MIB);
                        client.put_raw(path, &range, &data[start..end])
                    })
                })
                .collect();
            sends.into_iter().map(|s| s.join().unwrap()).collect()
        })
    };
    let new: Vec<String> = (0..UPLOADS)
        .map(|n| format!("/upload/?filename=u{n}.bin"))
        .collect();
    let mut ids = Vec::new();
    for created in send_all(&new, 0) {
        assert_eq!(created.status, 200, "{}", created.text());
        assert_eq!(created.json()["offset"], MIB);
        ids.push(created.json()["id"].as_str().unwrap().to_owned());
    }
    let paths: Vec<String> = ids.iter().map(|id| format!("/upload/{id}/")).collect();
    for appended in send_all(&paths, 1) {
        assert_eq!(appended.status, 200, "{}", appended.text());
        assert_eq!(appended.json()["offset"], 2 * MIB);
    }
    for (id, data) in ids.iter().zip(&data) {
        assert_eq!(client.complete(id, &md5_hex(data)).status, 200);
    }
    let last = paths.last().unwrap();
    assert_eq!(
        &client.get(&format!("{last}file")).body,
        data.last().unwrap()
    );
}

both_backends!(more_uploads_at_once_than_segments_all_finish);
