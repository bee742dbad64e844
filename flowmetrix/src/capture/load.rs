//! The embedded object and loading its programs.

use aya::{
    Ebpf,
    programs::{SchedClassifier, Xdp},
    util::KernelVersion,
};
use tracing::debug;

use super::error::CaptureError;

/// Forwards the XDP program's log records to `log` (and so to tracing).
pub type EbpfLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

/// The program `name` of the object, as its kind `P`.
pub(super) fn program<'a, P>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut P, CaptureError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(CaptureError::Missing(name))?
        .try_into()
        .map_err(|e| CaptureError::Load {
            what: kind_of(name),
            source: Box::new(e),
        })
}

/// "XDP program" or "TC program", by the program's name in the object.
fn kind_of(name: &str) -> &'static str {
    if name == flowmetrix_common::PROGRAM_NAME {
        "XDP program"
    } else {
        "TC program"
    }
}

pub(super) fn load_program<P>(ebpf: &mut Ebpf, name: &'static str) -> Result<(), CaptureError>
where
    for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    P: Loadable,
{
    let program: &mut P = program(ebpf, name)?;
    program.load_it().map_err(|e| load_error(kind_of(name), e))
}

/// The programs' `load`, which aya does not put in a trait.
pub(super) trait Loadable {
    fn load_it(&mut self) -> Result<(), aya::programs::ProgramError>;
}

impl Loadable for Xdp {
    fn load_it(&mut self) -> Result<(), aya::programs::ProgramError> {
        self.load()
    }
}

impl Loadable for SchedClassifier {
    fn load_it(&mut self) -> Result<(), aya::programs::ProgramError> {
        self.load()
    }
}

/// A load failure of `what`: the capabilities to run with when the kernel said EPERM
/// (anywhere in the error's causes: a map's creation, a program's load), else the error.
pub(super) fn load_error(
    what: &'static str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> CaptureError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            == Some(libc::EPERM)
        {
            return CaptureError::NotPermitted { what };
        }
        cause = c.source();
    }
    CaptureError::Load {
        what,
        source: Box::new(e),
    }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it there, where we may.
/// Later kernels charge it to the memory cgroup and never look at the limit: nothing to do
/// (and nothing to say when the limit cannot be raised).
pub(super) fn raise_memlock_limit() {
    if !memlock_matters(KernelVersion::current().ok()) {
        return;
    }
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        debug!(
            "could not raise RLIMIT_MEMLOCK ({}): this kernel charges BPF maps to it, so loading may fail if it is low",
            std::io::Error::last_os_error()
        );
    }
}

/// Whether RLIMIT_MEMLOCK limits BPF memory on this kernel (unknown: assume it does).
fn memlock_matters(kernel: Option<KernelVersion>) -> bool {
    kernel.is_none_or(|v| v < KernelVersion::new(5, 11, 0))
}

#[cfg(test)]
mod tests {
    use aya::{EbpfError, maps::MapError};

    use super::*;

    #[test]
    fn eperm_names_the_capabilities_not_the_map() {
        let e = EbpfError::MapError(MapError::CreateError {
            name: "FLOWS1".into(),
            io_error: std::io::Error::from_raw_os_error(libc::EPERM),
        });
        let e = load_error("TC programs", e);
        assert_eq!(
            e.to_string(),
            "cannot load the TC programs: not permitted (run as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)"
        );
        assert!(std::error::Error::source(&e).is_none());
        // Another errno keeps the kernel's words as the cause.
        let e = EbpfError::MapError(MapError::CreateError {
            name: "FLOWS1".into(),
            io_error: std::io::Error::from_raw_os_error(libc::EINVAL),
        });
        let e = load_error("XDP program", e);
        assert_eq!(e.to_string(), "cannot load the XDP program");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn memlock_matters_only_before_5_11() {
        assert!(memlock_matters(Some(KernelVersion::new(5, 10, 200))));
        assert!(memlock_matters(None));
        assert!(!memlock_matters(Some(KernelVersion::new(5, 11, 0))));
        assert!(!memlock_matters(Some(KernelVersion::new(6, 8, 0))));
    }
}
