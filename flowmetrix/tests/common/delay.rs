//! A one-way delay without netem: in namespace `ns`, packets routed to one address go into
//! a TUN device, and a thread writes each of them out of a veth (in an Ethernet frame to
//! the peer's MAC, through an AF_PACKET socket) a fixed time later. The other way is not
//! touched. Everything goes on drop (the TUN device with its file descriptor, the route
//! with it).
//!
//! Where the delay sits matters to what a hook on the veth sees: a packet through the delay
//! line leaves the veth after its wait (its TC egress sees it late), where netem on the
//! veth delays it after TC egress. Put the line on the side whose outgoing packets the
//! collector does not watch.

use std::{
    ffi::CString,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{in_netns, must, packet_socket};

/// `TUNSETIFF` (`_IOW('T', 202, int)`), and the flags of a TUN device without the packet
/// information prefix.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

/// A running delay line; stops and removes its device on drop.
pub struct DelayLine {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
    /// The TUN device's name.
    pub tun: String,
}

/// Where a [`DelayLine`] takes packets and where it puts them.
pub struct Line<'a> {
    /// The namespace the packets come from.
    pub ns: &'a str,
    /// The TUN device to create there (at most 15 characters, unique).
    pub tun: &'a str,
    /// Packets to this address go through the line…
    pub to: Ipv4Addr,
    /// …sent from this one (an address of `ns`)…
    pub from: Ipv4Addr,
    /// …and leave this interface of `ns`, from MAC `macs.0` to `macs.1`.
    pub out: &'a str,
    pub macs: ([u8; 6], [u8; 6]),
    pub delay: Duration,
}

impl DelayLine {
    pub fn start(line: &Line<'_>) -> Self {
        let (tun, out) = (line.tun.to_owned(), line.out.to_owned());
        let (tun_fd, out_fd) = in_netns(line.ns, move || (open_tun(&tun), packet_socket(&out)));
        must(&["ip", "-n", line.ns, "link", "set", line.tun, "up"]);
        let (to, from) = (format!("{}/32", line.to), line.from.to_string());
        must(&[
            "ip", "-n", line.ns, "route", "add", &to, "dev", line.tun, "src", &from,
        ]);
        // The answers come back on the veth, not the TUN device the route names.
        for conf in ["all", "default", line.out] {
            let k = format!("net.ipv4.conf.{conf}.rp_filter=0");
            must(&["ip", "netns", "exec", line.ns, "sysctl", "-qw", &k]);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let header = {
            let mut h = Vec::with_capacity(14);
            h.extend_from_slice(&line.macs.1);
            h.extend_from_slice(&line.macs.0);
            h.extend_from_slice(&0x0800u16.to_be_bytes());
            h
        };
        let (delay, quit) = (line.delay, Arc::clone(&stop));
        let thread = std::thread::spawn(move || run(&tun_fd, &out_fd, &header, delay, &quit));
        Self {
            stop,
            thread: Some(thread),
            tun: line.tun.to_owned(),
        }
    }

    /// Stops the line; how many packets it passed.
    pub fn stop(mut self) -> u64 {
        self.halt()
    }

    fn halt(&mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map_or(0, |t| t.join().unwrap_or_default())
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.halt();
    }
}

fn open_tun(name: &str) -> OwnedFd {
    let path = CString::new("/dev/net/tun").unwrap();
    // SAFETY: plain syscalls with checked results; `ifr` is a zeroed ifreq we fill.
    unsafe {
        let fd = libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
        );
        assert!(
            fd >= 0,
            "open /dev/net/tun: {}",
            std::io::Error::last_os_error()
        );
        let fd = OwnedFd::from_raw_fd(fd);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        assert!(name.len() < ifr.ifr_name.len(), "{name}: too long");
        for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = IFF_TUN | IFF_NO_PI;
        let rc = libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, &mut ifr);
        assert_eq!(
            rc,
            0,
            "TUNSETIFF {name}: {}",
            std::io::Error::last_os_error()
        );
        fd
    }
}

/// Reads packets from `tun` and sends each, behind `header` (its EtherType IPv4, or IPv6
/// for an IPv6 packet), on `out` `delay` after it came;
/// until `stop`. How many it sent.
fn run(tun: &OwnedFd, out: &OwnedFd, header: &[u8], delay: Duration, stop: &AtomicBool) -> u64 {
    let mut waiting: std::collections::VecDeque<(Instant, Vec<u8>)> = Default::default();
    let mut buf = vec![0u8; 65_536];
    let mut sent = 0;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        while waiting.front().is_some_and(|(due, _)| *due <= now) {
            let Some((_, frame)) = waiting.pop_front() else {
                break;
            };
            // SAFETY: a valid fd and buffer. A send that fails (the peer gone at the end
            // of a test) drops the packet, as a wire would.
            let n = unsafe { libc::send(out.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            if n > 0 {
                sent += 1;
            }
        }
        let wait = waiting
            .front()
            .map_or(Duration::from_millis(10), |(due, _)| {
                due.saturating_duration_since(now)
            })
            .min(Duration::from_millis(10));
        let mut pfd = libc::pollfd {
            fd: tun.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as libc::c_int) };
        if ready <= 0 {
            continue;
        }
        loop {
            // SAFETY: a valid fd and buffer; non-blocking.
            let n = unsafe { libc::read(tun.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            let Ok(n) = usize::try_from(n) else { break };
            if n == 0 {
                break;
            }
            let mut frame = Vec::with_capacity(header.len() + n);
            frame.extend_from_slice(header);
            if buf[0] >> 4 == 6 {
                frame[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            }
            frame.extend_from_slice(&buf[..n]);
            waiting.push_back((Instant::now() + delay, frame));
        }
    }
    sent
}
