//! Filters of ours left on an interface by a collector killed with SIGKILL (netlink path).

use aya::programs::{TcAttachType, loaded_programs, tc::qdisc_detach_program};
use tracing::{debug, info, warn};

/// Removes the `kind` filters named `name` from `iface` when nothing but filters holds
/// a program of that name: no running process has one open (another collector would,
/// for as long as it runs), so every such filter is a leftover.
pub fn remove(iface: &str, kind: TcAttachType, name: &str) {
    // The kernel keeps 15 characters of a program's name.
    let short = &name[..name.len().min(15)];
    let ids: Vec<u32> = loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str() == Some(short))
        .map(|p| p.id())
        .collect();
    if ids.is_empty() {
        return;
    }
    let me = std::process::id();
    if let Some(pid) = holder(&ids, me) {
        // Without TCX the kernel cannot say which interface that collector's filters are
        // on: say what it would mean.
        warn!(
            interface = iface,
            "another collector (process {pid}) has a {name} program loaded: if it captures on {iface} too, every packet there is written twice (with TCX, Linux 6.6 or later, a second collector is refused instead)"
        );
        return;
    }
    match qdisc_detach_program(iface, kind, name) {
        Ok(()) => info!(
            interface = iface,
            "removed a stale {name} filter left by a collector that was killed"
        ),
        Err(e) => debug!("no stale {name} filter on {iface}: {e}"),
    }
}

/// A process other than `me` with a file descriptor on one of programs `ids`.
fn holder(ids: &[u32], me: u32) -> Option<u32> {
    let wants: Vec<String> = ids.iter().map(|id| format!("prog_id:\t{id}\n")).collect();
    for proc in std::fs::read_dir("/proc").ok()?.filter_map(Result::ok) {
        let Some(pid) = proc
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.filter_map(Result::ok) {
            let Ok(info) = std::fs::read_to_string(fd.path()) else {
                continue;
            };
            if wants.iter().any(|w| info.contains(w.as_str())) {
                return Some(pid);
            }
        }
    }
    None
}
