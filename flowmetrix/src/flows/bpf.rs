//! bpf(2) called directly, for the map calls aya does not make (batch reads and deletes): the
//! one wrapper the stage's map readers share.

use std::io;

/// The kernel's internal ENOTSUPP, which bpf(2) may return for unsupported map ops.
pub const ENOTSUPP: i32 = 524;

/// `union bpf_attr`, as 8-byte words (zero where a command does not look).
pub type Attr = [u64; 16];

/// bpf(2) with command `cmd`.
pub fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<()> {
    // SAFETY: `attr` is a zeroed bpf_attr laid out for `cmd`, whose pointers point at
    // buffers that live across the call, sized as the map's keys and values.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            size_of::<Attr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
