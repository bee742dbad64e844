//! `setup`'s step for the manifest tests: PyPI's `kubernetes-validate` (it ships the
//! official JSON schemas of each Kubernetes version), in a virtual environment of its own
//! under `target/tools/`. A venv rather than `pip install --break-system-packages`: nothing
//! of the system's Python is touched, no root is needed, and Debian's pip (which refuses
//! system-wide installs) is not involved. Idempotent: skipped when the pinned version is
//! there.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

/// The pinned release; the tests name the Kubernetes version they validate against.
pub const VERSION: &str = "1.37.0";

/// Where the venv goes, under the workspace root; the tests look for the command there.
pub const VENV: &str = "target/tools/kubernetes-validate";

/// Installs `kubernetes-validate` `VERSION` into [`VENV`] unless it is there.
pub fn install(root: &Path) -> anyhow::Result<()> {
    let venv = root.join(VENV);
    let pip = venv.join("bin/pip");
    let installed = Command::new(&pip)
        .args(["show", "kubernetes-validate"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == format!("Version: {VERSION}"))
        });
    if installed && venv.join("bin/kubernetes-validate").exists() {
        return Ok(());
    }
    if !pip.exists() {
        let made = crate::run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        if made.is_err() {
            // Debian's python3 makes a venv only with python3-venv (ensurepip) installed.
            if !crate::is_root() {
                bail!(
                    "cannot make a Python venv in {}: install python3-venv (as root: apt-get install python3-venv)",
                    venv.display()
                );
            }
            let _ = std::fs::remove_dir_all(&venv);
            crate::run(
                Command::new("apt-get")
                    .args([
                        "install",
                        "-y",
                        "-q",
                        "--no-install-recommends",
                        "python3-venv",
                    ])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )?;
            crate::run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        }
    }
    crate::run(
        Command::new(&pip)
            .args(["install", "-q", "--disable-pip-version-check"])
            .arg(format!("kubernetes-validate=={VERSION}")),
    )
    .with_context(|| format!("cannot install kubernetes-validate into {}", venv.display()))
}
