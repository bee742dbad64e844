//! The flows stage (`--mode flows|both`): packets counted per flow, one interval at a time,
//! turned into [`FlowRecord`](crate::record::FlowRecord)s.
//!
//! Live, the kernel counts every packet in its flow maps; every `--flow-interval` the
//! stage collects one generation ([`kernel::FlowMaps::collect`]: the map's
//! entries and the flow events of packets the full map could not take) and
//! [`Aggregator::add_collected`] adds both here; [`Aggregator::rows`] then makes one row per
//! flow and empties the aggregator. The kernel's map is cleared by the collection, so a flow
//! idle for a whole interval has no entry and gets no row, and each packet is in exactly one
//! collection, so in exactly one row.
//!
//! A replayed pcap is keyed by the same parser ([`flowmetrix_common::flow_key::parse`]) in
//! [`Aggregator::add_frame`], with intervals by packet time: `[k·interval, (k+1)·interval)`
//! since the epoch, each row's `ts` its interval's end (also for the last one, which the
//! file ended in).
//!
//! The stage ([`stage`]) runs beside the packet path: live, on a task of its own with its own
//! timer, given the kernel's maps at start, the interface names ([`crate::sample::InterfaceNames`])
//! and the learned prefix (a watch channel the decode stage sends on); in a replay, fed the
//! frames by the pipeline. [`aggregate`] adds up an interval and makes its rows; [`kernel`]
//! reads the kernel's maps; [`handshakes`] reads the TCP handshakes' states (live) or runs
//! their state machine on the frames (replay); [`tcp`] the local sockets' retransmits and RTT
//! (`--tcp-health`), and [`drops`] the drop program's, at the same generation flip; [`health`] joins such figures to the rows.
//! All of them read their kernel maps whole through one reader (`bpf.rs`: a few batch calls
//! an interval, one key at a time where the kernel refuses them).

pub mod aggregate;
mod bpf;
pub mod drops;
pub mod handshakes;
pub mod health;
pub mod kernel;
pub mod stage;
pub mod tcp;

pub use aggregate::{Aggregator, Interfaces, PacketClock};
pub use handshakes::{HandshakeMap, HandshakeTotals, Tracker};
pub use health::{Handshake, Health, Parts, SocketKey};
pub use kernel::{Collected, FlowMapError, FlowMaps};
pub use stage::{FlowSettings, Live, Replay, Signals};
