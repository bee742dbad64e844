//! The spool directory's lock: `lock` holds the owner's pid, locked (`flock`, through
//! [`File::try_lock`]) for the spool's life, so a second collector on the same directory is
//! refused with the pid of the one that has it.

use std::{
    fs::{File, OpenOptions, TryLockError},
    io::{Read as _, Write as _},
    path::Path,
};

pub const LOCK_FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool directory {path}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "spool directory {path} is in use by another collector (pid {holder}): give this one its own --spool-dir, or --no-spool"
    )]
    Locked { path: String, holder: String },
}

/// Takes the directory's lock, or says who holds it.
pub fn lock(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join(LOCK_FILE);
    let dir_err = |source| SpoolError::Dir {
        path: dir.display().to_string(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(dir_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::Error(e)) => return Err(dir_err(e)),
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(SpoolError::Locked {
                path: dir.display().to_string(),
                holder: if holder.is_empty() {
                    "unknown".into()
                } else {
                    holder.into()
                },
            });
        }
    }
    file.set_len(0)
        .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .map_err(dir_err)?;
    Ok(file)
}
