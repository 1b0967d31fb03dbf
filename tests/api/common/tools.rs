//! Real clients from PyPI and npm, installed once per test run under the
//! target directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("clients")
}

/// Runs `command`, which must succeed.
pub fn run(command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(status.success(), "{command:?} failed");
}

/// Installs are one at a time: two tests may want the same one.
static INSTALLING: Mutex<()> = Mutex::new(());

/// The Python of a virtual environment named `name` in which `module`
/// imports, made with `pip install requirement` when it does not yet.
pub fn python_with(name: &str, module: &str, requirement: &str) -> PathBuf {
    let _one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let venv = clients_dir().join(name);
    let python = venv.join("bin/python");
    let ready = || {
        Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ready() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(venv.join("bin/pip")).args(["install", "-q", requirement]));
    }
    assert!(ready(), "{requirement} is not installed");
    python
}

/// The `node_modules` in which `package` (`name@version`) is installed.
pub fn node_modules_with(package: &str) -> PathBuf {
    let _one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let name = package.rsplit_once('@').map_or(package, |(name, _)| name);
    let prefix = clients_dir().join("node");
    let modules = prefix.join("node_modules");
    if !modules.join(name).join("package.json").exists() {
        std::fs::create_dir_all(&prefix).unwrap();
        run(Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg(package));
    }
    modules
}
