//! What passes from the source to the stages after it: a [`Sample`] (or the ring record
//! that was not one, a [`RecordError`]), what is known of the source ([`SourceInfo`]), and
//! the names of the interfaces captured on ([`InterfaceNames`]). Below every stage: the
//! source makes these, the decode and flows stages read them, and none of them imports
//! another stage for them.

use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock, RwLockReadGuard},
};

use flowmetrix_common::SLOT_SIZES;

use crate::{
    decode::Link,
    record::{Direction, UnixNanos},
};

/// One sampled frame, borrowed from the source.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// The captured bytes (any VMware prefix included).
    pub frame: &'a [u8],
    /// The frame's length on the wire, as far as `frame` goes: without [`vlan`](Self::vlan).
    pub wire_len: u32,
    /// The VLAN id of an outer 802.1Q/802.1ad tag the kernel took out of the frame into the
    /// skb's metadata (TC hooks): it was on the wire, 4 bytes before the EtherType, but is
    /// not in `frame` nor in `wire_len`. None: no such tag (XDP, files).
    pub vlan: Option<u16>,
    pub ts: UnixNanos,
    pub ifindex: u32,
    pub direction: Direction,
    /// The cgroup v2 id of the sending socket (TC egress); 0: none or not known.
    pub cgroup_id: u64,
    /// What the frame starts with: Ethernet live, the file's link type in a replay.
    pub link: Link,
    /// The name of the interface `ifindex` is (live capture); None: [`SourceInfo::interface`].
    pub interface: Option<&'a Arc<str>>,
    /// A DNS packet the kernel passed outside the sampling (flows mode): for the DNS
    /// transactions only, never a packet row.
    pub dns_only: bool,
}

/// What the rows need to know about the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInfo {
    /// The interface captured on (the `-i` values, for rows whose interface is not known);
    /// for a file, the file's name.
    pub interface: std::sync::Arc<str>,
    /// 1 in N packets is sampled.
    pub sample_rate: u32,
    /// Bytes captured per sample (0: whole frames, as a file holds them).
    pub snaplen: u32,
    /// Whether the source waits for the output rather than dropping rows (a file can wait;
    /// the kernel cannot).
    pub waits: bool,
}

/// A ring record that is not a sample.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("ring record of {0} bytes is not a sample (one of {SLOT_SIZES:?} bytes of data)")]
    BadSize(usize),
    #[error("ring record claims {0} captured bytes, more than its {1}-byte slot")]
    BadCapLen(u16, usize),
    #[error("ring record has direction {0}, neither ingress (0) nor egress (1)")]
    BadDirection(u16),
}

/// ifindex → name of the interfaces captured on (live), and for a few seconds of those just
/// gone (their last samples may still be in the ring). One map, shared: the source writes
/// it as it attaches and detaches, names the samples it hands to the decode stage from it,
/// and the flows stage names its rows from it.
#[derive(Debug, Clone, Default)]
pub struct InterfaceNames(Arc<RwLock<HashMap<u32, Arc<str>>>>);

impl InterfaceNames {
    /// The name of interface `ifindex`, if known.
    pub fn get(&self, ifindex: u32) -> Option<Arc<str>> {
        self.read().get(&ifindex).cloned()
    }

    pub fn insert(&self, ifindex: u32, name: Arc<str>) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(ifindex, name);
    }

    pub fn remove(&self, ifindex: u32) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&ifindex);
    }

    /// The map, read-locked: to name many samples with one look.
    pub fn read(&self) -> RwLockReadGuard<'_, HashMap<u32, Arc<str>>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }
}
