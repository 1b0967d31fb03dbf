//! The demo page in a real browser: headless Chromium (Debian's chromium,
//! driven by playwright-core from npm) uploads through FilePond in chunks
//! and through Uppy over tus while the network drops requests and goes
//! offline, reverts, loads and restores; the stored bytes are the files'.

use crate::both_backends;
use crate::common::*;
use std::path::Path;
use std::process::Command;

/// Where the browser's screenshot of the finished page is kept.
fn screenshot_path(backend: Backend) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("demo-{backend:?}.png").to_lowercase())
}

fn filepond_and_uppy_resume_in_chromium(backend: Backend) {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: install Debian's chromium (.ci/run does)"
    );
    let setup = Setup::new(backend, &[]);
    let client = setup.client();
    let modules = node_modules_with("playwright-core@1.65.2");
    let screenshot = screenshot_path(backend);
    let _ = std::fs::remove_file(&screenshot);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/browser_demo.js");
    let out = Command::new("node")
        .arg(script)
        .arg(setup.server.url(""))
        .arg(&setup.token)
        .arg(&screenshot)
        .env("NODE_PATH", modules)
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    assert_eq!(
        report["offsite"],
        serde_json::json!([]),
        "nothing loaded from elsewhere"
    );
    assert_eq!(report["dropped"], 2, "{report}");
    for widget in ["filepond", "uppy"] {
        let upload = &report[widget];
        assert_eq!(upload["md5"], upload["expected"], "{widget}: {report}");
    }
    // FilePond's upload was reverted: gone from the server.
    assert_eq!(report["reverted"], 404);
    let pond_id = report["filepond"]["id"].as_str().unwrap();
    assert_eq!(client.get(&format!("/upload/{pond_id}/")).status, 404);
    // Uppy's is stored byte for byte, and FilePond loaded and restored it.
    let uppy = &report["uppy"];
    let id = uppy["id"].as_str().unwrap();
    let stored = client.get(&format!("/upload/{id}/file"));
    assert_eq!(md5_hex(&stored.body), uppy["expected"].as_str().unwrap());
    assert_eq!(
        report["reads"],
        serde_json::json!({"restore": 200, "load": 200})
    );
    let files = report["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{report}");
    for file in files {
        assert_eq!(
            (&file["name"], &file["size"]),
            (&"uppy.bin".into(), &uppy["size"])
        );
    }
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
}

both_backends!(filepond_and_uppy_resume_in_chromium);
