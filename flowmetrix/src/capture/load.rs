//! The embedded object and loading its programs.

use aya::{
    Ebpf,
    programs::{SchedClassifier, Xdp},
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
            hint: "",
            source: Box::new(e),
        })
}

pub(super) fn load_program<P>(ebpf: &mut Ebpf, name: &'static str) -> Result<(), CaptureError>
where
    for<'a> &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
    P: Loadable,
{
    let program: &mut P = program(ebpf, name)?;
    program.load_it().map_err(|e| CaptureError::Load {
        hint: privilege_hint(),
        source: Box::new(e),
    })
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

pub(super) fn privilege_hint() -> &'static str {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        " (run as root, or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)"
    } else {
        ""
    }
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; lift it where we may.
pub(super) fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}
