//! A full disk: 507, the upload stays resumable at its old offset, and the
//! server keeps serving. On a real small filesystem (a 4 MiB tmpfs).

use crate::both_backends;
use crate::common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A size-limited tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// None (a loud skip) where this machine cannot mount one; under CI
    /// that is a failure.
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            return Some(Tmpfs(path.to_owned()));
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cannot mount a tmpfs (root needed)"
        );
        eprintln!(
            "SKIPPED: cannot mount a tmpfs here (root needed); the disk-full test did not run"
        );
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

const MIB: usize = 1 << 20;

fn a_full_disk_answers_507_and_keeps_the_upload(backend: Backend) {
    full_disk(backend, &[]);
}

/// Without syncing, the part file's writes run on the request's own thread
/// (`PartWriter::cached`): their failure must be handled the same.
fn a_full_disk_answers_507_without_sync_too(backend: Backend) {
    full_disk(backend, &["--sync", "false"]);
}

fn full_disk(backend: Backend, flags: &[&str]) {
    let store = Store::new(backend);
    let token = store.token("alice");
    let Some(_small) = Tmpfs::mount(&store.data.0.join("small"), "4m") else {
        return;
    };
    let server = Server::start(&store, &[&["--path-template", "small"], flags].concat());
    let client = Client::new(&server, &token);
    let full = json!({"detail": "Insufficient storage"});

    let other = bytes(3 * MIB / 2, 1);
    let kept = client.send(
        "POST",
        &format!("/upload/?filename=b.bin&md5={}", md5_hex(&other)),
        &[("Content-Type", "application/octet-stream")],
        &other,
    );
    assert_eq!(kept.status, 200, "{}", kept.text());
    let data = bytes(3 * MIB, 2);
    let first = client.put_raw(
        "/upload/?filename=a.bin",
        &format!("bytes 0-{}/{}", 2 * MIB - 1, 3 * MIB),
        &data[..2 * MIB],
    );
    assert_eq!(first.status, 200, "{}", first.text());
    let id = first.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/upload/{id}/");
    let next_range = format!("bytes {}-{}/{}", 2 * MIB, 3 * MIB - 1, 3 * MIB);

    let refused = client.put_raw(&path, &next_range, &data[2 * MIB..]);
    assert_eq!((refused.status, refused.json()), (507, full.clone()));
    assert_eq!(client.get(&path).json()["offset"], 2 * MIB);
    eventually("the failed chunk is cut off", || {
        store
            .part_files()
            .contains(&(format!("{id}.part"), 2 * MIB as u64))
    });
    let new_one = client.put_raw(
        "/upload/?filename=c.bin",
        &format!("bytes 0-{}/{}", MIB - 1, MIB),
        &data[..MIB],
    );
    assert_eq!((new_one.status, new_one.json()), (507, full));
    // The server goes on serving.
    assert_eq!(client.get("/upload/").json().as_array().unwrap().len(), 2);
    assert_eq!(client.get("/healthz").status, 200);
    eventually("nothing of the refused upload stays", || {
        store.part_files().len() == 2
    });

    // Room again: the upload resumes where it was.
    let freed = client.send(
        "DELETE",
        &format!("/upload/{}/", kept.json()["id"].as_str().unwrap()),
        &[],
        b"",
    );
    assert_eq!(freed.status, 204);
    let resumed = client.put_raw(&path, &next_range, &data[2 * MIB..]);
    assert_eq!(resumed.status, 200, "{}", resumed.text());
    assert_eq!(client.complete(&id, &md5_hex(&data)).status, 200);
    assert_eq!(client.get(&format!("{path}file")).body, data);
}

both_backends!(
    a_full_disk_answers_507_and_keeps_the_upload,
    a_full_disk_answers_507_without_sync_too
);
