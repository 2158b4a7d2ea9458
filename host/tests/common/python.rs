//! Python tools the tests run (aiosmtpd, Schemathesis), each pinned in a `requirements.txt` under
//! `tests/` and installed into that directory's `.venv` the first time, the way the harness runs
//! `npm ci` for the OAuth server.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The Python of `tests/<dir>/.venv`, created and filled from `tests/<dir>/requirements.txt`
/// unless `import <probe>` already works there. `what` names the tests that need it.
pub fn venv(dir: &str, probe: &str, what: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _once = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let dir = repo_root().join("tests").join(dir);
    let venv = dir.join(".venv");
    let py = venv.join("bin/python");
    let ready = Command::new(&py)
        .args(["-c", &format!("import {probe}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ready {
        return py;
    }
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .unwrap_or_else(|e| {
            panic!("{what} need Python 3 with venv ({e}): apt-get install python3-venv")
        });
    assert!(
        status.success(),
        "python3 -m venv {} failed",
        venv.display()
    );
    let requirements = dir.join("requirements.txt");
    let status = Command::new(&py)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements)
        .status()
        .expect("pip");
    assert!(
        status.success(),
        "installing what {what} need failed; run `{} -m pip install -r {}` and fix what it reports",
        py.display(),
        requirements.display()
    );
    py
}
