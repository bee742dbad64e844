//! What to load and where to attach it (from the command line), and the map sizes that
//! follow from it.

use flowmetrix_common::{
    flow_key::{MODE_FLOWS, MODE_PACKETS},
    handshake::DEFAULT_HANDSHAKE_MAX_ENTRIES,
};

/// How to attach the XDP program.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic (skb) mode.
    #[default]
    Auto,
    Native,
    Skb,
}

/// Which directions to capture (`--direction`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Directions {
    /// Packets arriving (the original's behaviour).
    #[default]
    Ingress,
    /// Packets leaving.
    Egress,
    Both,
}

impl Directions {
    pub fn ingress(self) -> bool {
        matches!(self, Self::Ingress | Self::Both)
    }

    pub fn egress(self) -> bool {
        matches!(self, Self::Egress | Self::Both)
    }
}

/// Where ingress is sampled (`--ingress-hook`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IngressHook {
    #[default]
    Xdp,
    /// A TC program, for interfaces whose driver's XDP is unsuitable.
    Tc,
}

/// How TC programs are attached (the hidden `--tc-attach`, for tests and old kernels).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TcAttach {
    /// TCX where the kernel has it (6.6+), else a clsact qdisc filter through netlink.
    #[default]
    Auto,
    /// TCX only.
    Tcx,
    /// A clsact filter through netlink only (not detached by kill -9: see the module doc).
    Netlink,
}

/// What to load and where to attach it.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// The `-i` values: interface names and patterns (see [`crate::watch::Selection`]).
    pub interfaces: Vec<String>,
    pub mode: XdpMode,
    pub sample_rate: u32,
    pub snaplen: u32,
    pub ring_bytes: u32,
    pub directions: Directions,
    pub ingress_hook: IngressHook,
    pub tc_attach: TcAttach,
    /// Sample packets into the ring (`--mode packets|both`).
    pub packets: bool,
    /// Count every packet in the flow maps (`--mode flows|both`).
    pub flows: Option<FlowsConfig>,
}

/// The kernel side of `--mode flows|both`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowsConfig {
    /// Entries of each of the two flow maps (`--flow-max-entries`).
    pub max_entries: u32,
    /// The prefix before the Ethernet header: `-offset`'s, or `None` with `-auto-detect`
    /// until it is learned ([`crate::flows::kernel::FlowMaps::set_prefix`]).
    pub prefix: Option<u32>,
    /// Test hook ([`crate::settings::FLOW_EVENTS_BYTES_ENV`]): the flow event ring's size
    /// instead of the one `max_entries` gives (rounded up to a power of two, at least a
    /// page), to fill it in a test.
    pub events_bytes: Option<u32>,
    /// The ports DNS is served on (53 and `--dns-port`'s): the programs pass DNS packets to
    /// the ring whatever the sample rate.
    pub dns_ports: [u16; flowmetrix_common::DNS_PORTS],
    /// Track TCP handshakes (`HANDSHAKES_ON`; off with `--tcp-health off`): when off, the
    /// programs skip it and its state map is shrunk to one entry.
    pub handshakes: bool,
    /// `--tcp-health`: local sockets' retransmits and RTT (tracing programs, probed at
    /// load).
    pub tcp_health: bool,
    /// Drops by reason (`--drops`): the `skb:kfree_skb` program, probed at start.
    pub drops: bool,
}

/// Load-time mode and map sizes for `cfg`: what a mode does not use is shrunk to the
/// kernel's minimum (one flow entry, one page of ring).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSizes {
    /// `MODE` bits.
    pub mode: u32,
    pub samples_bytes: u32,
    pub flow_entries: u32,
    pub events_bytes: u32,
    /// Entries of the handshake state map (1 when the tracking is off).
    pub handshake_entries: u32,
}

/// The sample ring of `--mode flows`, which carries DNS packets only.
const DNS_RING_BYTES: u32 = 1 << 20;

/// Smallest and largest flow-event ring: it holds about as many events as the map holds
/// flows (80 bytes a record), within these bounds.
const EVENTS_MIN_BYTES: u32 = 1 << 20;
const EVENTS_MAX_BYTES: u32 = 64 << 20;

impl MapSizes {
    pub fn of(cfg: &CaptureConfig) -> Self {
        let page = page_size();
        let mut mode = 0;
        if cfg.packets {
            mode |= MODE_PACKETS;
        }
        let (flow_entries, events_bytes) = match cfg.flows {
            Some(f) => {
                mode |= MODE_FLOWS;
                let want = u64::from(f.max_entries) * 80;
                let bytes = match f.events_bytes {
                    Some(b) => b.min(EVENTS_MAX_BYTES).next_power_of_two(),
                    None => want
                        .clamp(u64::from(EVENTS_MIN_BYTES), u64::from(EVENTS_MAX_BYTES))
                        .next_power_of_two()
                        .min(u64::from(EVENTS_MAX_BYTES)) as u32,
                };
                (f.max_entries.max(1), bytes.max(page))
            }
            None => (1, page),
        };
        Self {
            mode,
            // Flows mode passes DNS packets through the ring too: alone, they need little of
            // it (a 1 MiB ring holds some 3 000 of them, drained every 20 ms).
            samples_bytes: if cfg.packets {
                cfg.ring_bytes
            } else if cfg.flows.is_some() {
                cfg.ring_bytes.min(DNS_RING_BYTES).max(page)
            } else {
                page
            },
            flow_entries,
            events_bytes,
            handshake_entries: match cfg.flows {
                Some(f) if f.handshakes => DEFAULT_HANDSHAKE_MAX_ENTRIES,
                _ => 1,
            },
        }
    }
}

fn page_size() -> u32 {
    // SAFETY: no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(page).unwrap_or(4096).max(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_sizes_shrink_what_the_mode_does_not_use() {
        let mut cfg = CaptureConfig {
            interfaces: vec![],
            mode: XdpMode::Auto,
            sample_rate: 1,
            snaplen: 192,
            ring_bytes: 8 << 20,
            directions: Directions::Ingress,
            ingress_hook: IngressHook::Xdp,
            tc_attach: TcAttach::Auto,
            packets: true,
            flows: None,
        };
        let page = page_size();
        let s = MapSizes::of(&cfg);
        assert_eq!((s.mode, s.samples_bytes), (MODE_PACKETS, 8 << 20));
        assert_eq!((s.flow_entries, s.events_bytes), (1, page));
        assert_eq!(s.handshake_entries, 1);
        cfg.flows = Some(FlowsConfig {
            max_entries: 100_000,
            prefix: None,
            events_bytes: None,
            dns_ports: [53, 0, 0, 0],
            handshakes: true,
            tcp_health: true,
            drops: true,
        });
        let s = MapSizes::of(&cfg);
        assert_eq!(s.mode, MODE_PACKETS | MODE_FLOWS);
        // 100 000 events of 80 bytes: 8 MB, rounded up to a power of two.
        assert_eq!((s.flow_entries, s.events_bytes), (100_000, 8 << 20));
        assert_eq!(s.handshake_entries, DEFAULT_HANDSHAKE_MAX_ENTRIES);
        cfg.packets = false;
        let s = MapSizes::of(&cfg);
        assert_eq!((s.mode, s.samples_bytes), (MODE_FLOWS, DNS_RING_BYTES));
        cfg.flows = Some(FlowsConfig {
            max_entries: 10,
            prefix: Some(0),
            events_bytes: None,
            dns_ports: [53, 0, 0, 0],
            handshakes: true,
            tcp_health: true,
            drops: true,
        });
        assert_eq!(MapSizes::of(&cfg).events_bytes, 1 << 20, "at least 1 MiB");
        cfg.flows = Some(FlowsConfig {
            max_entries: u32::MAX,
            prefix: Some(0),
            events_bytes: None,
            dns_ports: [53, 0, 0, 0],
            handshakes: true,
            tcp_health: true,
            drops: true,
        });
        assert_eq!(MapSizes::of(&cfg).events_bytes, 64 << 20, "at most 64 MiB");
        assert!(MapSizes::of(&cfg).events_bytes.is_power_of_two());
        // The test hook: a ring of its own size, at least a page.
        cfg.flows = Some(FlowsConfig {
            max_entries: 16,
            prefix: Some(0),
            events_bytes: Some(100),
            dns_ports: [53, 0, 0, 0],
            handshakes: true,
            tcp_health: true,
            drops: true,
        });
        assert_eq!(MapSizes::of(&cfg).events_bytes, page);
    }
}
