//! The chunkup binary's command line, without a server: its help names
//! the commands and exit codes, and usage errors exit 2 before any request.
//! (The tests that upload with it run against real servers in the chunkd
//! package's `tests/api/chunkup.rs`.)

use std::process::Command;

const CHUNKUP: &str = env!("CARGO_BIN_EXE_chunkup");

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(CHUNKUP)
        .args(args)
        .env_remove("CHUNKUP_TOKEN")
        .output()
        .expect("chunkup runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_names_the_commands_and_exit_codes() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, Some(0));
    for word in [
        "push",
        "status",
        "abort",
        "Exit codes:",
        "5  retries exhausted",
    ] {
        assert!(out.contains(word), "{word:?} missing from {out}");
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["push"][..],
        &[
            "push",
            "f",
            "http://127.0.0.1:1/upload/",
            "--chunk-size",
            "0",
        ],
        &[
            "push",
            "f",
            "http://127.0.0.1:1/upload/",
            "--chunk-size",
            "12Q",
        ],
        &["frobnicate"],
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
    }
}
