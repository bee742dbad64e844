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

pub use sys::BatchStep;

use super::handshakes::{HandshakeMap, HandshakeMapError};

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
    maps: [MapData; 2],
    events: RingBuf<MapData>,
    /// The generation the programs count under now.
    generation: u32,
    max_entries: u32,
    /// Events read from the ring of a generation not collected yet.
    pending: Vec<FlowEvent>,
    /// Entries read by a collection that then failed: given with the next one.
    carry: Vec<(FlowKey, FlowValue)>,
    /// Whether the kernel takes BPF_MAP_LOOKUP_AND_DELETE_BATCH (until it refuses).
    batch: bool,
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
        let max_entries = maps[0].info().map_err(FlowMapError::Info)?.max_entries();
        let handshakes = HandshakeMap::from_ebpf(ebpf)?;
        let mut this = Self {
            cfg,
            maps,
            events,
            generation: 0,
            max_entries,
            pending: Vec::new(),
            carry: Vec::new(),
            batch: true,
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
        self.batch = false;
    }

    /// Kernel memory of one flow map (the `memlock` the kernel charges for it), if known.
    pub fn map_memlock(&self) -> Option<u64> {
        let fd = self.maps[0].fd().as_fd().as_raw_fd();
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
        let map = &self.maps[(old & 1) as usize];
        let mut flows = std::mem::take(&mut self.carry);
        let before = flows.len();
        let read = read_and_clear(map, &mut self.batch, &mut flows);
        if let Err(e) = read {
            self.carry = flows;
            return Err(e);
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

fn hash_map(map: aya::maps::Map, name: &'static str) -> Result<MapData, FlowMapError> {
    match map {
        aya::maps::Map::HashMap(m) => Ok(m),
        other => Err(FlowMapError::Map(
            name,
            aya::maps::MapError::InvalidName {
                name: format!("{name} is a {other:?}, not a hash map"),
            },
        )),
    }
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
/// Largest batch buffer (entries): far more than a hash bucket ever holds (the kernel
/// sizes the bucket array to the map, so buckets hold one or two entries).
const BATCH_MAX: usize = 1 << 16;

/// Reads and clears every entry of `map` into `out`: batch calls while the kernel takes
/// them (`batch` is cleared for good when it refuses), else one key at a time.
fn read_and_clear(
    map: &MapData,
    batch: &mut bool,
    out: &mut Vec<(FlowKey, FlowValue)>,
) -> Result<(), FlowMapError> {
    let fd = map.fd().as_fd().as_raw_fd();
    if *batch {
        let done = batches(
            |from, keys, values| sys::lookup_and_delete_batch(fd, from, keys, values),
            out,
        )?;
        if done {
            return Ok(());
        }
        tracing::debug!("BPF_MAP_LOOKUP_AND_DELETE_BATCH refused: reading flows one by one");
        *batch = false;
    }
    one_by_one(fd, out)
}

/// Drives batch calls (`call(from, keys, values)`, `from`: None for the first) until the map
/// is empty; gives false when the kernel refuses them (what was read is in `out`).
pub fn batches(
    mut call: impl FnMut(Option<u32>, &mut [FlowKey], &mut [FlowValue]) -> BatchStep,
    out: &mut Vec<(FlowKey, FlowValue)>,
) -> Result<bool, FlowMapError> {
    let mut size = BATCH;
    let mut keys = vec![FlowKey::ZERO; size];
    let mut values = vec![FlowValue::default(); size];
    let mut from = None;
    loop {
        match call(from, &mut keys, &mut values) {
            BatchStep::More { count, next } => {
                let count = count.min(size);
                out.extend(
                    keys[..count]
                        .iter()
                        .copied()
                        .zip(values[..count].iter().copied()),
                );
                from = Some(next);
            }
            BatchStep::Done { count } => {
                let count = count.min(size);
                out.extend(
                    keys[..count]
                        .iter()
                        .copied()
                        .zip(values[..count].iter().copied()),
                );
                return Ok(true);
            }
            BatchStep::TooSmall if size < BATCH_MAX => {
                size *= 2;
                keys.resize(size, FlowKey::ZERO);
                values.resize(size, FlowValue::default());
            }
            BatchStep::TooSmall => {
                return Err(FlowMapError::Read {
                    call: "BPF_MAP_LOOKUP_AND_DELETE_BATCH",
                    source: io::Error::from_raw_os_error(libc::ENOSPC),
                });
            }
            BatchStep::Unsupported => return Ok(false),
            BatchStep::Failed(source) => {
                return Err(FlowMapError::Read {
                    call: "BPF_MAP_LOOKUP_AND_DELETE_BATCH",
                    source,
                });
            }
        }
    }
}

/// Reads and deletes every entry with get-next-key, lookup and delete: each key is deleted
/// once the next one is known (no program writes the map meanwhile, so the walk misses
/// nothing, and it stays linear: asking for the first key again would rescan the buckets).
fn one_by_one(fd: i32, out: &mut Vec<(FlowKey, FlowValue)>) -> Result<(), FlowMapError> {
    let fail = |call| move |source| FlowMapError::Read { call, source };
    let mut at = sys::next_key(fd, None).map_err(fail("BPF_MAP_GET_NEXT_KEY"))?;
    while let Some(key) = at {
        if let Some(value) = sys::lookup(fd, &key).map_err(fail("BPF_MAP_LOOKUP_ELEM"))? {
            out.push((key, value));
        }
        at = sys::next_key(fd, Some(&key)).map_err(fail("BPF_MAP_GET_NEXT_KEY"))?;
        sys::delete(fd, &key).map_err(fail("BPF_MAP_DELETE_ELEM"))?;
    }
    Ok(())
}

/// The bpf(2) calls aya 0.14 does not offer (batch calls), and the one-key ones, on a raw
/// map fd.
mod sys {
    use std::io;

    use flowmetrix_common::flow_key::{FlowKey, FlowValue};

    /// What one batch call did.
    #[derive(Debug)]
    pub enum BatchStep {
        /// `count` entries read (and deleted); go on from `next`.
        More {
            count: usize,
            next: u32,
        },
        /// `count` entries read; the map has no more.
        Done {
            count: usize,
        },
        /// The buffers are too small for the next hash bucket (ENOSPC, nothing read).
        TooSmall,
        /// The kernel does not take batch calls on this map (EINVAL, ENOTSUPP, …).
        Unsupported,
        Failed(io::Error),
    }

    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
    const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
    const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
    use super::super::bpf::{Attr, ENOTSUPP, bpf};

    /// One BPF_MAP_LOOKUP_AND_DELETE_BATCH call (attr.batch: in_batch, out_batch, keys,
    /// values, count | map_fd, elem_flags, flags).
    pub fn lookup_and_delete_batch(
        fd: i32,
        from: Option<u32>,
        keys: &mut [FlowKey],
        values: &mut [FlowValue],
    ) -> BatchStep {
        let n = keys.len().min(values.len());
        let mut in_batch = from.unwrap_or(0);
        let mut out_batch = 0u32;
        let mut attr: Attr = [0; 16];
        attr[0] = if from.is_some() {
            (&raw mut in_batch) as u64
        } else {
            0
        };
        attr[1] = (&raw mut out_batch) as u64;
        attr[2] = keys.as_mut_ptr() as u64;
        attr[3] = values.as_mut_ptr() as u64;
        attr[4] = n as u64 | (u64::from(fd as u32) << 32);
        let rc = bpf(BPF_MAP_LOOKUP_AND_DELETE_BATCH, &mut attr);
        let count = (attr[4] & 0xffff_ffff) as usize;
        match rc {
            Ok(()) => BatchStep::More {
                count,
                next: out_batch,
            },
            Err(e) => match e.raw_os_error() {
                Some(libc::ENOENT) => BatchStep::Done { count },
                Some(libc::ENOSPC) if count == 0 => BatchStep::TooSmall,
                Some(libc::EINVAL | libc::ENOTSUP | ENOTSUPP | libc::ENOSYS) if count == 0 => {
                    BatchStep::Unsupported
                }
                _ => BatchStep::Failed(e),
            },
        }
    }

    /// attr for the one-key calls: map_fd | key | value or next_key | flags.
    fn elem(fd: i32, key: u64, value: u64) -> Attr {
        let mut attr: Attr = [0; 16];
        attr[0] = u64::from(fd as u32);
        attr[1] = key;
        attr[2] = value;
        attr
    }

    /// The key after `key` (None: the first key); None at the end.
    pub fn next_key(fd: i32, key: Option<&FlowKey>) -> io::Result<Option<FlowKey>> {
        let mut next = FlowKey::ZERO;
        let key = key.map_or(0, |k| (&raw const *k) as u64);
        let mut attr = elem(fd, key, (&raw mut next) as u64);
        match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(()) => Ok(Some(next)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn lookup(fd: i32, key: &FlowKey) -> io::Result<Option<FlowValue>> {
        let mut value = FlowValue::default();
        let mut attr = elem(fd, (&raw const *key) as u64, (&raw mut value) as u64);
        match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
            Ok(()) => Ok(Some(value)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn delete(fd: i32, key: &FlowKey) -> io::Result<()> {
        let mut attr = elem(fd, (&raw const *key) as u64, 0);
        match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        }
    }
}

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

    /// A hash map as the batch calls see it: buckets, each read whole or not at all.
    struct FakeMap {
        buckets: Vec<Vec<u32>>,
        calls: usize,
    }

    impl FakeMap {
        fn call(
            &mut self,
            from: Option<u32>,
            keys: &mut [FlowKey],
            values: &mut [FlowValue],
        ) -> BatchStep {
            self.calls += 1;
            let mut b = from.unwrap_or(0) as usize;
            let mut n = 0;
            while b < self.buckets.len() {
                let bucket = &self.buckets[b];
                if bucket.len() > keys.len() - n {
                    if n == 0 {
                        return BatchStep::TooSmall;
                    }
                    return BatchStep::More {
                        count: n,
                        next: b as u32,
                    };
                }
                for &k in bucket {
                    keys[n] = FlowKey {
                        ifindex: k,
                        ..FlowKey::ZERO
                    };
                    values[n] = FlowValue {
                        packets: u64::from(k),
                        ..Default::default()
                    };
                    n += 1;
                }
                self.buckets[b].clear();
                b += 1;
            }
            BatchStep::Done { count: n }
        }
    }

    #[test]
    fn batches_read_every_bucket_once_and_grow_for_a_big_bucket() {
        // 10 000 entries over 5 000 buckets, one bucket bigger than the first buffer.
        let mut buckets: Vec<Vec<u32>> = (0..5_000u32).map(|b| vec![2 * b, 2 * b + 1]).collect();
        buckets[1234] = (100_000..100_000 + BATCH as u32 + 10).collect();
        let want: usize = buckets.iter().map(Vec::len).sum();
        let mut map = FakeMap { buckets, calls: 0 };
        let mut out = Vec::new();
        assert!(batches(|f, k, v| map.call(f, k, v), &mut out).unwrap());
        assert_eq!(out.len(), want);
        let mut seen: Vec<u32> = out.iter().map(|(k, _)| k.ifindex).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), want, "each entry once");
        assert!(out.iter().all(|(k, v)| u64::from(k.ifindex) == v.packets));
        assert!(map.buckets.iter().all(Vec::is_empty), "all deleted");
        assert!(map.calls >= 4);
    }

    #[test]
    fn a_refused_batch_call_falls_back_and_an_error_is_one() {
        let mut out = Vec::new();
        assert!(!batches(|_, _, _| BatchStep::Unsupported, &mut out).unwrap());
        let err = batches(
            |_, _, _| BatchStep::Failed(io::Error::from_raw_os_error(libc::EFAULT)),
            &mut out,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("BPF_MAP_LOOKUP_AND_DELETE_BATCH"),
            "{err}"
        );
        let err = batches(|_, _, _| BatchStep::TooSmall, &mut out).unwrap_err();
        assert!(matches!(err, FlowMapError::Read { .. }));
        // An empty map: one call.
        let mut calls = 0;
        assert!(
            batches(
                |_, _, _| {
                    calls += 1;
                    BatchStep::Done { count: 0 }
                },
                &mut out
            )
            .unwrap()
        );
        assert_eq!((calls, out.len()), (1, 0));
    }
}
