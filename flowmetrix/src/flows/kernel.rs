//! The kernel's flow maps (`--mode flows|both`), seen from userspace: flips the generation
//! the programs count into, waits until no program still counts into the old one, then
//! reads and clears the old map and drains the flow events of that generation.
//!
//! # Why every packet lands in exactly one collection
//!
//! The programs (`flowmetrix-ebpf/src/flows.rs`) read the generation `g` from `FLOWCFG`
//! once per packet and count the packet in `FLOWS{g & 1}`, or, when that map is full, send
//! it as a [`FlowEvent`] tagged with `g`. [`FlowMaps::collect`]:
//! 1. writes `g + 1` to `FLOWCFG`: programs that start from now on count into the other
//!    map;
//! 2. waits an RCU grace period with `membarrier(MEMBARRIER_CMD_GLOBAL)`, which runs
//!    `synchronize_rcu()`: XDP and TC programs run inside RCU read-side sections, so when it
//!    returns, every program that may have read `g` has finished — its map update is done,
//!    its event submitted — and none will touch `FLOWS{g & 1}` again until the flip after
//!    next;
//! 3. reads and deletes every entry of `FLOWS{g & 1}` with `BPF_MAP_LOOKUP_AND_DELETE_BATCH`
//!    (falling back to get-next-key, lookup, delete where the kernel refuses batch calls).
//!    No program writes that map meanwhile, so the read sees each of its packets once, and
//!    the delete loses none;
//! 4. drains `FLOWEVENTS`: events of generation `g` (or older) go in this [`Collected`];
//!    newer ones (programs already on `g + 1`) are kept for the next collection.
//!
//! So a packet is counted under the generation it read, and that generation is collected
//! exactly once. The one caveat: the ring's reader stops at a record still reserved by a
//! running program (of `g + 1`); an event of `g` reserved after it (by a program that read
//! `g` just before the flip and reserved later) is then read at the next collection, and
//! goes in that [`Collected`] — late, but still counted once. Events older than the
//! collected generation are always included. Another: the kernel skips the grace period of
//! `MEMBARRIER_CMD_GLOBAL` when only one CPU is online; programs attached to interfaces then
//! run in softirq context, which the collector's thread cannot interrupt on that CPU, but a
//! kernel with preemptible softirqs (PREEMPT_RT) on one CPU could let a packet miss its
//! interval (counted in the next one: the map is cleared by a delete of what was read).
//!
//! When a collection fails half-way (a system call error), what was read is kept and given
//! with the next successful collection: nothing read is dropped.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{
    Ebpf,
    maps::{Array, MapData, RingBuf},
};
use flowmetrix_common::flow_key::{
    FLOW_CFG_GENERATION, FLOW_CFG_PREFIX, FLOW_CONFIG_MAP, FLOW_EVENTS_MAP, FLOW_MAPS, FlowEvent,
    FlowKey, FlowValue, PREFIX_UNKNOWN,
};

use super::{
    bpf::{BatchMap, CallError},
    handshakes::{HandshakeMap, HandshakeMapError},
};

#[derive(Debug, thiserror::Error)]
pub enum FlowMapError {
    #[error("the XDP object lacks the map {0}")]
    Missing(&'static str),
    #[error("map {0} has an unexpected type")]
    Map(&'static str, #[source] aya::maps::MapError),
    #[error("cannot write the flow config map")]
    Config(#[source] aya::maps::MapError),
    #[error(
        "the kernel lacks membarrier(MEMBARRIER_CMD_GLOBAL), needed to collect flows exactly (Linux 4.3+, not with nohz_full CPUs)"
    )]
    NoMembarrier,
    #[error("membarrier(MEMBARRIER_CMD_GLOBAL) failed")]
    Membarrier(#[source] io::Error),
    #[error("reading the flow map failed ({call})")]
    Read {
        call: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the flow map's size")]
    Info(#[source] aya::maps::MapError),
    #[error(transparent)]
    Handshakes(#[from] HandshakeMapError),
}

impl From<CallError> for FlowMapError {
    fn from(CallError { call, source }: CallError) -> Self {
        Self::Read { call, source }
    }
}

/// What one collection gives: everything the programs counted under one generation.
#[derive(Debug, Default)]
pub struct Collected {
    /// The generation these packets were counted under.
    pub generation: u32,
    /// Every entry of that generation's map (read and cleared).
    pub flows: Vec<(FlowKey, FlowValue)>,
    /// Flow events (packets the full map could not take) of that generation, or older ones
    /// that arrived late.
    pub events: Vec<FlowEvent>,
    /// Entries the map held when read, and its size (`--flow-max-entries`).
    pub map_entries: usize,
    pub max_entries: u32,
}

/// The loaded flow maps and the flow-event ring.
pub struct FlowMaps {
    cfg: Array<MapData, u32>,
    maps: [BatchMap<FlowKey, FlowValue>; 2],
    events: RingBuf<MapData>,
    /// The generation the programs count under now.
    generation: u32,
    max_entries: u32,
    /// Events read from the ring of a generation not collected yet.
    pending: Vec<FlowEvent>,
    /// Entries read by a collection that then failed: given with the next one.
    carry: Vec<(FlowKey, FlowValue)>,
    /// The TCP handshakes' states, read by the flows stage at every collection.
    pub handshakes: Option<HandshakeMap>,
}

impl FlowMaps {
    /// Takes the flow maps and the event ring out of a loaded object, and sets generation 0
    /// and `prefix` for the programs. Fails when the kernel cannot give the grace period
    /// [`collect`](Self::collect) needs.
    pub fn from_ebpf(ebpf: &mut Ebpf, prefix: Option<u32>) -> Result<Self, FlowMapError> {
        if !membarrier::supported() {
            return Err(FlowMapError::NoMembarrier);
        }
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(FlowMapError::Missing(name));
        let cfg = Array::try_from(take(FLOW_CONFIG_MAP)?)
            .map_err(|e| FlowMapError::Map(FLOW_CONFIG_MAP, e))?;
        let events = RingBuf::try_from(take(FLOW_EVENTS_MAP)?)
            .map_err(|e| FlowMapError::Map(FLOW_EVENTS_MAP, e))?;
        let maps = [
            hash_map(take(FLOW_MAPS[0])?, FLOW_MAPS[0])?,
            hash_map(take(FLOW_MAPS[1])?, FLOW_MAPS[1])?,
        ];
        let max_entries = maps[0]
            .map()
            .info()
            .map_err(FlowMapError::Info)?
            .max_entries();
        let handshakes = HandshakeMap::from_ebpf(ebpf)?;
        let mut this = Self {
            cfg,
            maps,
            events,
            generation: 0,
            max_entries,
            pending: Vec::new(),
            carry: Vec::new(),
            handshakes,
        };
        this.cfg
            .set(FLOW_CFG_GENERATION, 0, 0)
            .map_err(FlowMapError::Config)?;
        this.set_prefix(prefix)?;
        Ok(this)
    }

    /// Tells the programs the prefix before the Ethernet header (`None`: not known yet,
    /// packets are counted as not keyed).
    pub fn set_prefix(&mut self, prefix: Option<u32>) -> Result<(), FlowMapError> {
        self.cfg
            .set(FLOW_CFG_PREFIX, prefix.unwrap_or(PREFIX_UNKNOWN), 0)
            .map_err(FlowMapError::Config)
    }

    /// The generation the programs count under now (the next [`collect`](Self::collect)
    /// gives it).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Entries of each of the two maps.
    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }

    /// Reads with get-next-key, lookup and delete from now on, as on a kernel that refuses
    /// batch calls (for tests of that path).
    #[doc(hidden)]
    pub fn without_batch_calls(&mut self) {
        for map in &mut self.maps {
            map.without_batch_calls();
        }
    }

    /// Kernel memory of one flow map (the `memlock` the kernel charges for it), if known.
    pub fn map_memlock(&self) -> Option<u64> {
        let fd = self.maps[0].map().fd().as_fd().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Flips the generation, waits for programs still counting into the old one, reads and
    /// clears its map and drains the flow events. Blocking (system calls): call it from a
    /// blocking thread.
    pub fn collect(&mut self) -> Result<Collected, FlowMapError> {
        let old = self.generation;
        let new = old.wrapping_add(1);
        self.cfg
            .set(FLOW_CFG_GENERATION, new, 0)
            .map_err(FlowMapError::Config)?;
        self.generation = new;
        membarrier::global().map_err(FlowMapError::Membarrier)?;
        let map = &mut self.maps[(old & 1) as usize];
        let mut flows = std::mem::take(&mut self.carry);
        let before = flows.len();
        if let Err(e) = map.read_and_delete(&mut flows) {
            self.carry = flows;
            return Err(e.into());
        }
        let map_entries = flows.len() - before;
        // The kernel's marks above the flags byte are its own (FLOW_AWAITS_ACK).
        for (_, v) in &mut flows[before..] {
            v.tcp_flags &= 0xff;
        }
        self.drain_events();
        let events = take_events(&mut self.pending, old);
        Ok(Collected {
            generation: old,
            flows,
            events,
            map_entries,
            max_entries: self.max_entries,
        })
    }

    /// Moves every event waiting in the ring to `pending`.
    fn drain_events(&mut self) {
        while let Some(item) = self.events.next() {
            if let Some(e) = event_of(&item) {
                self.pending.push(e);
            }
        }
    }
}

fn hash_map(
    map: aya::maps::Map,
    name: &'static str,
) -> Result<BatchMap<FlowKey, FlowValue>, FlowMapError> {
    BatchMap::new(map, BATCH).map_err(|e| FlowMapError::Map(name, e))
}

/// A ring record as a [`FlowEvent`] (None if it is too short, which the program never
/// submits).
fn event_of(record: &[u8]) -> Option<FlowEvent> {
    if record.len() < size_of::<FlowEvent>() {
        return None;
    }
    // SAFETY: FlowEvent is plain old data of that many bytes; read unaligned.
    Some(unsafe { record.as_ptr().cast::<FlowEvent>().read_unaligned() })
}

/// The events of `generation` or older (generations wrap: "older" is at most 2^31 behind),
/// taken out of `pending`, in arrival order; newer ones stay.
pub fn take_events(pending: &mut Vec<FlowEvent>, generation: u32) -> Vec<FlowEvent> {
    let (now, later): (Vec<_>, Vec<_>) = pending
        .drain(..)
        .partition(|e| (generation.wrapping_sub(e.generation) as i32) >= 0);
    *pending = later;
    now
}

/// Entries one batch call asks for at first (grown when a hash bucket holds more).
const BATCH: usize = 4096;

/// The grace period `collect` waits for.
pub(super) mod membarrier {
    const MEMBARRIER_CMD_QUERY: libc::c_long = 0;
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;

    fn call(cmd: libc::c_long) -> libc::c_long {
        // SAFETY: membarrier takes no pointers.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                cmd,
                0 as libc::c_long,
                0 as libc::c_long,
            )
        }
    }

    /// Whether the kernel offers MEMBARRIER_CMD_GLOBAL.
    pub fn supported() -> bool {
        let mask = call(MEMBARRIER_CMD_QUERY);
        mask >= 0 && mask & MEMBARRIER_CMD_GLOBAL != 0
    }

    /// Waits until every CPU has passed an RCU grace period (`synchronize_rcu()`).
    pub fn global() -> std::io::Result<()> {
        if call(MEMBARRIER_CMD_GLOBAL) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(generation: u32, bytes: u32) -> FlowEvent {
        FlowEvent {
            key: FlowKey::ZERO,
            ts_boot_ns: 0,
            bytes,
            generation,
            tcp_flags: 0,
            _pad: [0; 7],
        }
    }

    #[test]
    fn events_of_the_collected_generation_and_older_go_newer_wait() {
        let mut pending = vec![ev(4, 1), ev(5, 2), ev(3, 3), ev(5, 4), ev(6, 5)];
        let now = take_events(&mut pending, 5);
        assert_eq!(
            now.iter().map(|e| e.bytes).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        assert_eq!(pending.iter().map(|e| e.bytes).collect::<Vec<_>>(), [5]);
        let now = take_events(&mut pending, 6);
        assert_eq!(now.len(), 1);
        assert!(pending.is_empty());
        // Across the wrap: u32::MAX is older than 0, 1 is newer.
        let mut pending = vec![ev(u32::MAX, 1), ev(0, 2), ev(1, 3)];
        let now = take_events(&mut pending, 0);
        assert_eq!(now.iter().map(|e| e.bytes).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(pending[0].bytes, 3);
    }

    #[test]
    fn event_records_are_read_whole_or_not_at_all() {
        let e = FlowEvent {
            ts_boot_ns: 7,
            ..ev(9, 1500)
        };
        // SAFETY: FlowEvent is plain old data.
        let bytes: [u8; 72] = unsafe { std::mem::transmute(e) };
        assert_eq!(event_of(&bytes), Some(e));
        // The ring hands out records rounded up to 8: longer is fine.
        let mut longer = bytes.to_vec();
        longer.extend([0; 8]);
        assert_eq!(event_of(&longer), Some(e));
        assert_eq!(event_of(&bytes[..71]), None);
    }

    #[test]
    fn a_failed_map_call_is_a_read_error_naming_the_call() {
        let err = FlowMapError::from(CallError {
            call: "BPF_MAP_LOOKUP_AND_DELETE_BATCH",
            source: io::Error::from_raw_os_error(libc::ENOSPC),
        });
        assert!(matches!(err, FlowMapError::Read { .. }));
        assert!(
            err.to_string().contains("BPF_MAP_LOOKUP_AND_DELETE_BATCH"),
            "{err}"
        );
    }
}
