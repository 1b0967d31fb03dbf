//! The OpenAPI document (`/openapi.json`) names every endpoint, and the live
//! server keeps to it: schemathesis (PyPI) sends it requests made from the
//! document (examples, edge cases, random ones, and sequences that follow
//! its links from a created upload to the operations on it) with a token,
//! and every answer must be no 5xx and match the document: its status, its
//! media type, its body's schema and its headers.

use crate::both_backends;
use crate::common::*;
use std::path::Path;
use std::process::Command;

const PATHS: [&str; 15] = [
    "/upload/",
    "/upload/{id}/",
    "/upload/{id}/file",
    "/files/",
    "/files/{id}",
    "/resumable/",
    "/resumable/{id}",
    "/filepond/",
    "/attachments/{bundle}/",
    "/attachments/{bundle}/{name}/",
    "/attachments/{bundle}/{name}/delete/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
];

fn the_live_server_keeps_its_openapi_contract(backend: Backend) {
    let setup = Setup::new(backend, &[]);
    let document = setup.client().get("/openapi.json");
    assert_eq!(document.status, 200);
    assert_eq!(document.header("content-type"), Some("application/json"));
    let document = document.json();
    assert_eq!(document["openapi"], "3.1.0");
    let mut paths: Vec<&str> = document["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    paths.sort();
    let mut expected = PATHS.to_vec();
    expected.sort();
    assert_eq!(paths, expected);

    let python = python_with("venv-schemathesis", "schemathesis", "schemathesis==4.32.5");
    let clients = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let out = Command::new(python.with_file_name("schemathesis"))
        .args(["run", &setup.server.url("/openapi.json")])
        .args(["--header", &format!("Authorization: Token {}", setup.token)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,response_headers_conformance",
        ])
        .args(["--max-examples", "50", "--no-color"])
        // tus bodies are raw bytes under a media type of their own.
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        // Its cache of earlier findings stays out of the source tree.
        .current_dir(&setup.store.logs.0)
        .env("PYTHONPATH", clients)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("32 selected / 32 total"), "{report}");
}

both_backends!(the_live_server_keeps_its_openapi_contract);
