//! Drops by reason (`--drops on`): the probe at start, then the `skb:kfree_skb` program
//! loaded and attached, its maps handed to the flows stage ([`DropMaps`]).
//!
//! The program is a BTF-enabled raw tracepoint (`tp_btf/kfree_skb`): its arguments are the
//! tracepoint's own (skb, location, reason), with no format file to parse, and it costs
//! less per event than a classic tracepoint (no copy of the event into a record first).
//! What it needs from the running kernel is read from its BTF before the object is
//! loaded ([`plan`]): the tracepoint's prototype (a `reason` argument, Linux 5.17+), the
//! reasons' names, the byte offsets of the `sk_buff`, `net_device` and `net` fields it
//! reads (Rust eBPF has no CO-RE), and the reason values that are not drops. Anything
//! missing — no BTF, no `reason`, a program the verifier refuses — turns the part off with
//! one line naming what is off; the rest runs. A test makes the probe fail with
//! [`DROPS_BTF_ENV`].

use std::path::{Path, PathBuf};

use aya::{Ebpf, programs::BtfTracePoint};
use flowmetrix_common::drops::{
    DROP_MAX_ENTRIES, DROP_PROGRAM_NAME, DROP_TRACEPOINT, NO_BLOCK, NO_FIELD, OFF_BLOCK,
    OFF_DEV_IFINDEX, OFF_DEV_NET, OFF_DST_DEV, OFF_NET_INUM, OFF_NETNS_INUM, OFF_SKB_DATA,
    OFF_SKB_DEV, OFF_SKB_HEAD, OFF_SKB_IIF, OFF_SKB_LEN, OFF_SKB_MAC_HEADER,
    OFF_SKB_NETWORK_HEADER, OFF_SKB_PROTOCOL, OFF_SKB_REFDST, OFF_SKB_TAIL, OFF_SKB_VLAN, OFFSETS,
    SKB_BLOCK, SKIPS,
};

use crate::{
    flows::drops::{DropMapError, DropMaps},
    kernel_btf::{BtfError, DropReasons, KernelBtf, VMLINUX},
};

/// Test hook: the BTF file the probe reads instead of the running kernel's (a file that is
/// not BTF makes the probe fail, as on a kernel without BTF).
pub const DROPS_BTF_ENV: &str = "FLOWMETRIX_TEST_DROPS_BTF";

/// Test hook: the entries of each per-interval drop map instead of [`DROP_MAX_ENTRIES`],
/// to fill it in a test.
pub const DROP_MAX_ENTRIES_ENV: &str = "FLOWMETRIX_TEST_DROP_MAX_ENTRIES";

/// Entries of each per-interval drop map.
pub fn max_entries() -> u32 {
    std::env::var(DROP_MAX_ENTRIES_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DROP_MAX_ENTRIES)
}

/// The reason names that are not drops: the normal path and the unset ones.
const NOT_DROPS: [&str; SKIPS] = ["NOT_DROPPED_YET", "CONSUMED", "NOT_SPECIFIED"];

/// Reason values looked at for [`NOT_DROPS`]: the core enum stays far below.
const CORE_REASONS_MAX: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum DropProbeError {
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(
        "skb:kfree_skb has no reason argument on this kernel (Linux 5.17+; its arguments: {0})"
    )]
    NoReason(String),
    #[error("the kernel's BTF for the program")]
    AyaBtf(#[source] aya::BtfError),
    #[error("the kernel refused the skb:kfree_skb program")]
    Program(#[source] aya::programs::ProgramError),
    #[error("the kernel object lacks the program {0}")]
    Missing(&'static str),
    #[error(transparent)]
    Maps(#[from] DropMapError),
}

/// What the program is loaded with, read from the kernel's BTF.
#[derive(Debug, Clone)]
pub struct DropPlan {
    pub offsets: [u32; OFFSETS],
    pub skip: [u32; SKIPS],
    pub reasons: DropReasons,
    btf: PathBuf,
}

/// Where the kernel's BTF is read from: [`VMLINUX`], or the test hook's file.
pub fn btf_path() -> PathBuf {
    std::env::var_os(DROPS_BTF_ENV).map_or_else(|| PathBuf::from(VMLINUX), PathBuf::from)
}

/// Reads what the program needs from the BTF at `path`.
pub fn plan(path: &Path) -> Result<DropPlan, DropProbeError> {
    let btf = KernelBtf::read(path)?;
    let args = btf.tracepoint_args(DROP_TRACEPOINT)?;
    if args.first().map(String::as_str) != Some("sk_buff")
        || args.get(2).map(String::as_str) != Some("skb_drop_reason")
    {
        return Err(DropProbeError::NoReason(args.join(", ")));
    }
    let reasons = btf.drop_reasons()?;
    let mut skip = [u32::MAX; SKIPS];
    for (i, name) in NOT_DROPS.iter().enumerate() {
        if let Some(v) = (0..CORE_REASONS_MAX).find(|v| reasons.name(*v) == *name) {
            skip[i] = v;
        }
    }
    let skb = |f| btf.offset_of("sk_buff", f);
    let mut offsets = [0; OFFSETS];
    offsets[OFF_SKB_LEN] = skb("len")?;
    offsets[OFF_SKB_PROTOCOL] = skb("protocol")?;
    offsets[OFF_SKB_DEV] = skb("dev")?;
    offsets[OFF_SKB_HEAD] = skb("head")?;
    offsets[OFF_SKB_DATA] = skb("data")?;
    offsets[OFF_SKB_TAIL] = skb("tail")?;
    offsets[OFF_SKB_NETWORK_HEADER] = skb("network_header")?;
    offsets[OFF_SKB_MAC_HEADER] = skb("mac_header")?;
    offsets[OFF_SKB_IIF] = skb("skb_iif")?;
    offsets[OFF_DEV_IFINDEX] = btf.offset_of("net_device", "ifindex")?;
    offsets[OFF_SKB_REFDST] = skb("_skb_refdst")?;
    offsets[OFF_DST_DEV] = btf.offset_of("dst_entry", "dev")?;
    offsets[OFF_SKB_VLAN] = skb("vlan_all").unwrap_or(NO_FIELD);
    offsets[OFF_BLOCK] = block_start(&offsets);
    // The namespace check, where the kernel lets us make it: else drops of every
    // namespace with a watched interface's index count.
    let netns = (|| -> Result<(u32, u32, u32), BtfError> {
        let dev_net = btf.offset_of("net_device", "nd_net")?;
        let inum = btf.offset_of("net", "ns")? + btf.offset_of("ns_common", "inum")?;
        Ok((dev_net, inum, own_netns()?))
    })();
    if let Ok((dev_net, inum, own)) = netns {
        offsets[OFF_DEV_NET] = dev_net;
        offsets[OFF_NET_INUM] = inum;
        offsets[OFF_NETNS_INUM] = own;
    }
    Ok(DropPlan {
        offsets,
        skip,
        reasons,
        btf: path.to_owned(),
    })
}

/// Where the block of `sk_buff` fields the program reads at once starts, or [`NO_BLOCK`]
/// when they span more than [`SKB_BLOCK`] bytes.
fn block_start(offsets: &[u32; OFFSETS]) -> u32 {
    let fields = [
        (OFF_SKB_LEN, 4),
        (OFF_SKB_PROTOCOL, 2),
        (OFF_SKB_HEAD, 8),
        (OFF_SKB_DATA, 8),
        (OFF_SKB_TAIL, 4),
        (OFF_SKB_NETWORK_HEADER, 2),
        (OFF_SKB_MAC_HEADER, 2),
        (OFF_SKB_IIF, 4),
        (OFF_SKB_VLAN, 4),
    ];
    let there = || fields.iter().filter(|(i, _)| offsets[*i] != NO_FIELD);
    let lo = there().map(|(i, _)| offsets[*i]).min().unwrap_or(0);
    let hi = there().map(|(i, n)| offsets[*i] + n).max().unwrap_or(0);
    if (hi - lo) as usize <= SKB_BLOCK {
        lo
    } else {
        NO_BLOCK
    }
}

/// The inode number of the collector's network namespace.
fn own_netns() -> Result<u32, BtfError> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self/ns/net")
        .ok()
        .and_then(|m| u32::try_from(m.ino()).ok())
        .ok_or_else(|| BtfError::Missing("network namespace of the collector".into()))
}

/// Loads and attaches the program of the loaded object `ebpf` (its globals set from
/// `plan`), and takes its maps.
pub fn start(ebpf: &mut Ebpf, plan: DropPlan) -> Result<DropMaps, DropProbeError> {
    let btf = aya::Btf::parse_file(&plan.btf, aya::Endianness::default())
        .map_err(DropProbeError::AyaBtf)?;
    let program: &mut BtfTracePoint = ebpf
        .program_mut(DROP_PROGRAM_NAME)
        .ok_or(DropProbeError::Missing(DROP_PROGRAM_NAME))?
        .try_into()
        .map_err(DropProbeError::Program)?;
    program
        .load(DROP_TRACEPOINT, &btf)
        .map_err(DropProbeError::Program)?;
    program.attach().map_err(DropProbeError::Program)?;
    Ok(DropMaps::from_ebpf(ebpf, plan.reasons)?)
}

/// The one line that says the part is off, with every cause (each cut at its first line
/// break: the verifier's log, if any, goes to the debug log).
pub fn off_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = format!("drops by reason are off: {e}");
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
        let first = first
            .split_once(" Verifier output:")
            .map_or(first, |(f, _)| f);
        line.push_str(&format!(": {}", first.trim_end()));
        if !rest.is_empty() {
            tracing::debug!("drops by reason: {text}");
        }
        cause = c.source();
    }
    line.push_str(" (flows and DNS rows are not affected; --drops off silences this)");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_kernel_gives_every_offset_and_the_values_that_are_not_drops() {
        let p = plan(Path::new(VMLINUX)).unwrap();
        for i in [
            OFF_SKB_LEN,
            OFF_SKB_DEV,
            OFF_SKB_HEAD,
            OFF_SKB_IIF,
            OFF_DEV_IFINDEX,
        ] {
            assert!(p.offsets[i] > 0 || i == OFF_SKB_LEN, "{i}: {:?}", p.offsets);
        }
        assert!(p.offsets[OFF_NETNS_INUM] > 0, "{:?}", p.offsets);
        // This kernel's fields fit in one block read.
        assert_ne!(p.offsets[OFF_BLOCK], NO_BLOCK, "{:?}", p.offsets);
        assert!(p.offsets[OFF_BLOCK] <= p.offsets[OFF_SKB_LEN]);
        let mut spread = p.offsets;
        spread[OFF_SKB_IIF] = spread[OFF_SKB_LEN] + SKB_BLOCK as u32;
        assert_eq!(block_start(&spread), NO_BLOCK);
        // A field the kernel lacks is left out of the block.
        let mut old = p.offsets;
        old[OFF_SKB_VLAN] = NO_FIELD;
        assert_eq!(block_start(&old), p.offsets[OFF_BLOCK]);
        // NOT_SPECIFIED and CONSUMED are named by every kernel with reasons.
        assert!(
            p.skip[1] != u32::MAX && p.skip[2] != u32::MAX,
            "{:?}",
            p.skip
        );
        assert_eq!(p.reasons.name(p.skip[2]), "NOT_SPECIFIED");
    }

    #[test]
    fn a_kernel_without_btf_gives_one_line_naming_what_is_off() {
        let dir = std::env::temp_dir().join(format!("fm-drops-btf-{}", std::process::id()));
        std::fs::write(&dir, b"not BTF").unwrap();
        let e = plan(&dir).unwrap_err();
        let _ = std::fs::remove_file(&dir);
        let line = off_line(&e);
        assert!(
            line.starts_with("drops by reason are off: cannot read the kernel's BTF"),
            "{line}"
        );
        assert!(!line.contains('\n'), "{line}");
        // A refused program: the verifier's log stays out of the line.
        #[derive(Debug, thiserror::Error)]
        #[error(
            "the BPF_PROG_LOAD syscall returned Permission denied (os error 13). Verifier output: 0: R1=ctx()\ninvalid access"
        )]
        struct Refused;
        #[derive(Debug, thiserror::Error)]
        #[error("the kernel refused the skb:kfree_skb program")]
        struct Program(#[source] Refused);
        let line = off_line(&Program(Refused));
        assert_eq!(
            line,
            "drops by reason are off: the kernel refused the skb:kfree_skb program: the BPF_PROG_LOAD syscall returned Permission denied (os error 13). (flows and DNS rows are not affected; --drops off silences this)"
        );
        let e = DropProbeError::NoReason("sk_buff, void".into());
        assert!(
            off_line(&e).contains("no reason argument"),
            "{}",
            off_line(&e)
        );
    }
}
