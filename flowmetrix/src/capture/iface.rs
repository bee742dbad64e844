//! Interfaces by name: whether one exists (its index) and is up, asked of the kernel.

/// Whether an interface is administratively up (IFF_UP), if it exists.
pub fn if_is_up(name: &str) -> Option<bool> {
    let c = std::ffi::CString::new(name).ok()?;
    let bytes = c.as_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: an ioctl on a socket we own, with a zeroed ifreq holding the name.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
            *dst = src as libc::c_char;
        }
        // The request's type is the C library's: unsigned long in glibc, int in musl.
        let rc = libc::ioctl(fd, libc::SIOCGIFFLAGS as libc::Ioctl, &mut req);
        libc::close(fd);
        (rc == 0).then_some(req.ifr_ifru.ifru_flags & libc::IFF_UP as libc::c_short != 0)
    }
}

/// Index of an interface by name, if it exists.
pub fn if_index(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}
