//! The kernel's flow maps (`--mode flows|both`), seen from userspace: flips the generation
//! the programs count into, waits until no program still counts into the old one, then
//! reads and clears the old map and drains the flow events of that generation.
//!
//! INTERFACE STUB (lead): the kernel side fills this in; the flows stage uses only what is
//! declared here.

use flowmetrix_common::flow::{FlowEvent, FlowKey, FlowValue};

#[derive(Debug, thiserror::Error)]
pub enum FlowMapError {
    #[error("flow maps are not built yet")]
    NotBuilt,
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
    _private: (),
}

impl FlowMaps {
    /// Tells the programs the prefix before the Ethernet header (`None`: not known yet,
    /// packets are counted as not keyed).
    pub fn set_prefix(&mut self, _prefix: Option<u32>) -> Result<(), FlowMapError> {
        Err(FlowMapError::NotBuilt)
    }

    /// Flips the generation, waits for programs still counting into the old one, reads and
    /// clears its map and drains the flow events. Blocking (system calls): call it from a
    /// blocking thread.
    pub fn collect(&mut self) -> Result<Collected, FlowMapError> {
        Err(FlowMapError::NotBuilt)
    }
}
