//! `PacketRecord`: one decoded sample, field for field the columns of `packet_data`.
//!
//! Plain data. Its columns, and from them every encoding (row insert, Arrow, JSON, DDL), are
//! declared in `schema`.

use std::{net::IpAddr, sync::Arc};

use serde::{Serialize, Serializer};

/// What kind of network packet a frame carried (`packet_type` column).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PacketType {
    Ipv4,
    Ipv6,
    Arp,
    #[default]
    Other,
}

impl PacketType {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ipv4 => "IPv4",
            Self::Ipv6 => "IPv6",
            Self::Arp => "ARP",
            Self::Other => "OTHER",
        }
    }
}

impl Serialize for PacketType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Which way a packet went through its interface (`direction` column).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Direction {
    #[default]
    Ingress,
    Egress,
}

impl Direction {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

/// The kernel's direction value (`SampleHeader::direction`, `FlowKey::direction`).
impl From<flowmetrix_common::Direction> for Direction {
    fn from(d: flowmetrix_common::Direction) -> Self {
        match d {
            flowmetrix_common::Direction::Ingress => Self::Ingress,
            flowmetrix_common::Direction::Egress => Self::Egress,
        }
    }
}

impl From<Direction> for flowmetrix_common::Direction {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Ingress => Self::Ingress,
            Direction::Egress => Self::Egress,
        }
    }
}

impl Serialize for Direction {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An empty name, shared: a row gets its host and interface from the decode stage.
pub fn unnamed() -> Arc<str> {
    static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    Arc::clone(EMPTY.get_or_init(|| Arc::from("")))
}

/// The encapsulation a packet carries (`tunnel` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tunnel {
    Vxlan,
    Geneve,
    Gre,
    /// IPv4 or IPv6 directly in IPv4 or IPv6 (protocols 4 and 41).
    Ipip,
}

impl Tunnel {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Vxlan => "VXLAN",
            Self::Geneve => "GENEVE",
            Self::Gre => "GRE",
            Self::Ipip => "IPIP",
        }
    }
}

impl Serialize for Tunnel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A MAC address, written lower-case `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An MPLS label stack, outermost label first (`mpls_labels` column), written as the
/// labels in decimal joined by `/` (`16/1001`), as `ip route … encap mpls` writes it. At most
/// [`MplsLabels::MAX`] labels are kept (the decoder walks no deeper).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MplsLabels {
    labels: [u32; MplsLabels::MAX],
    len: u8,
}

impl MplsLabels {
    pub const MAX: usize = 8;

    /// Appends a label (its 20 bits); false when the stack is full.
    pub fn push(&mut self, label: u32) -> bool {
        let Some(slot) = self.labels.get_mut(usize::from(self.len)) else {
            return false;
        };
        *slot = label & 0xf_ffff;
        self.len += 1;
        true
    }

    pub fn as_slice(&self) -> &[u32] {
        &self.labels[..usize::from(self.len).min(Self::MAX)]
    }

    pub fn is_full(&self) -> bool {
        usize::from(self.len) >= Self::MAX
    }
}

impl MplsLabels {
    /// The first [`MplsLabels::MAX`] of these labels.
    pub fn from_slice(labels: &[u32]) -> Self {
        let mut stack = Self::default();
        for &l in labels {
            stack.push(l);
        }
        stack
    }
}

impl<const N: usize> From<[u32; N]> for MplsLabels {
    fn from(labels: [u32; N]) -> Self {
        Self::from_slice(&labels)
    }
}

impl std::fmt::Display for MplsLabels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, l) in self.as_slice().iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            write!(f, "{l}")?;
        }
        Ok(())
    }
}

impl Serialize for MplsLabels {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Which workload a row belongs to (the `cgroup_id`, `container_id`, `pod_uid`, `pod` and
/// `namespace` columns); each null when unknown. Filled by [`crate::attribution`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// The cgroup v2 id of the socket that sent the packet (egress), or of the socket the
    /// connection was seen sending from (ingress); the inode number of its directory.
    pub cgroup_id: Option<u64>,
    /// The container's 64-hex id, from the cgroup path (containerd, CRI-O, Docker).
    pub container_id: Option<Arc<str>>,
    /// The Kubernetes pod UID, from the cgroup path.
    pub pod_uid: Option<Arc<str>>,
    /// The pod's name and namespace (`--kube-metadata`).
    pub pod: Option<Arc<str>>,
    pub namespace: Option<Arc<str>>,
}

/// Capture time as nanoseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixNanos(pub i64);

impl UnixNanos {
    /// RFC 3339 in UTC with all nine fractional digits, e.g. `2026-11-22T01:02:03.000000042Z`.
    pub fn to_rfc3339(self) -> String {
        chrono::DateTime::from_timestamp_nanos(self.0)
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
    }
}

impl Serialize for UnixNanos {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

/// One sampled packet. Field names are the `packet_data` column names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketRecord {
    /// Kernel capture time.
    pub ts: UnixNanos,
    /// The host that captured it (`--host-name`; by default the host's name).
    pub host: Arc<str>,
    /// The interface it was captured on; for a file replayed, the file's name.
    pub interface: Arc<str>,
    pub direction: Direction,
    /// Application guessed from the ports (`UNKNOWN` when none matches).
    pub application: &'static str,
    pub packet_type: PacketType,
    /// Original frame length on the wire (after any VMware prefix), saturated to u16.
    pub packet_size: u16,
    /// EtherType of the frame.
    pub ether_type: u16,
    /// Null when the link type has no such address (raw IP, loopback; `dst_mac` for Linux
    /// cooked captures).
    pub src_mac: Option<MacAddr>,
    pub dst_mac: Option<MacAddr>,
    /// Outer VLAN id (802.1Q/802.1ad); null when untagged.
    pub vlan_id: Option<u16>,
    /// IP protocol number (upper layer); null for non-IP frames.
    pub protocol: Option<u8>,
    pub src_ip: Option<IpAddr>,
    pub dst_ip: Option<IpAddr>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// TCP flags byte (CWR ECE URG ACK PSH RST SYN FIN); null unless TCP.
    pub tcp_flags: Option<u8>,
    /// Encapsulation, when the packet is a tunnel: the columns above describe the outer
    /// packet, the `inner_*` ones the first packet inside.
    pub tunnel: Option<Tunnel>,
    pub inner_src_ip: Option<IpAddr>,
    pub inner_dst_ip: Option<IpAddr>,
    pub inner_protocol: Option<u8>,
    pub inner_src_port: Option<u16>,
    pub inner_dst_port: Option<u16>,
    /// The MPLS label stack the packet was carried under; null without MPLS.
    pub mpls_labels: Option<MplsLabels>,
    /// The 1-in-N rate this row was sampled at: multiply counts by it.
    pub sample_rate: u32,
    /// The workload it belongs to.
    pub workload: Workload,
}

impl Default for PacketRecord {
    /// An empty row: no addresses, ports or tunnel, application `UNKNOWN`, rate 1.
    fn default() -> Self {
        Self {
            ts: UnixNanos::default(),
            packet_size: 0,
            ether_type: 0,
            src_mac: None,
            dst_mac: None,
            vlan_id: None,
            protocol: None,
            src_ip: None,
            dst_ip: None,
            src_port: None,
            dst_port: None,
            tcp_flags: None,
            packet_type: PacketType::Other,
            application: crate::applications::UNKNOWN,
            tunnel: None,
            inner_src_ip: None,
            inner_dst_ip: None,
            inner_protocol: None,
            inner_src_port: None,
            inner_dst_port: None,
            mpls_labels: None,
            sample_rate: 1,
            host: unnamed(),
            interface: unnamed(),
            direction: Direction::Ingress,
            workload: Workload::default(),
        }
    }
}

/// One flow in one `--flow-interval`: field for field the columns of `flow_data`, in
/// table order. The key columns have `packet_data`'s names and text forms; a JSON line
/// with `interval_ms` is a flow row (packet rows have no such key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    /// The end of the interval the packets were counted in.
    pub ts: UnixNanos,
    pub host: Arc<str>,
    pub interface: Arc<str>,
    pub direction: Direction,
    /// From the ports, as for packet rows (TCP and UDP only; `UNKNOWN` otherwise).
    pub application: &'static str,
    /// Outer VLAN id; null when untagged.
    pub vlan_id: Option<u16>,
    pub ether_type: u16,
    /// Null for flows that are not IP.
    pub src_ip: Option<IpAddr>,
    pub dst_ip: Option<IpAddr>,
    /// IP protocol number, 0 for non-IP flows.
    pub protocol: u8,
    /// TCP/UDP ports; ICMP type and code; 0 otherwise (and on later fragments).
    pub src_port: u16,
    pub dst_port: u16,
    /// Packets and bytes (wire length less any prefix) of the flow in the interval: exact.
    pub packets: u64,
    pub bytes: u64,
    /// Kernel times of the flow's first and last packet in the interval.
    pub first_seen: UnixNanos,
    pub last_seen: UnixNanos,
    /// OR of the TCP flags bytes (0 unless TCP).
    pub tcp_flags: u8,
    /// The interval's length.
    pub interval_ms: u32,
    /// How well it flowed: handshake, retransmits, RTT, drops (issue 25).
    pub health: FlowHealth,
    /// The workload it belongs to.
    pub workload: Workload,
}

/// How well a flow went in one interval: the `tcp_*` and `drop_*` columns of `flow_data`.
/// Null (`None`) means not measured — the part is off (`--tcp-health off`, `--drops off`),
/// the kernel lacks its hook, or it does not apply (the `tcp_*` counts on a flow that is
/// not TCP); `Some(0)` means measured, and none. Filled by [`crate::flows::health`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowHealth {
    /// The connection's handshake, on the row of its initiating direction (client →
    /// server), in the interval it completed: on the server's host SYN-ACK out → the ACK
    /// that completes it, on the client's SYN out → SYN-ACK in, where it is forwarded both
    /// ways SYN → ACK.
    pub tcp_handshake_us: Option<u64>,
    /// SYNs after the first of one connection attempt (initiating direction's row).
    pub tcp_syn_retransmits: Option<u32>,
    /// Segments a local TCP socket sent again (`tcp:tcp_retransmit_skb`), on the row of the
    /// socket's sending direction.
    pub tcp_retransmits: Option<u32>,
    /// The interval's largest smoothed RTT of the local socket (`srtt_us >> 3`), same row.
    pub tcp_rtt_us: Option<u64>,
    /// Packets of this flow the kernel dropped (`skb:kfree_skb` with a reason), and bytes.
    pub drop_packets: Option<u64>,
    pub drop_bytes: Option<u64>,
    /// The interval's most frequent drop reason, by the running kernel's name for it
    /// (`NO_SOCKET`, `NETFILTER_DROP`, …); null without drops.
    pub drop_reason: Option<Arc<str>>,
}

/// One DNS transaction, a query and its answer (or none): field for field the columns of
/// `dns_data`. The client is the source; a JSON line with `dns_qname` is a DNS row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsRecord {
    /// When the query was captured.
    pub ts: UnixNanos,
    pub host: Arc<str>,
    pub interface: Arc<str>,
    /// The query's direction.
    pub direction: Direction,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    /// 17 (UDP) or 6 (TCP).
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub dns_id: u16,
    /// The first question's name, lower case, without the trailing dot.
    pub dns_qname: String,
    /// `A`, `AAAA`, … or the type's number.
    pub dns_qtype: std::borrow::Cow<'static, str>,
    /// `NOERROR`, `NXDOMAIN`, … (or the code's number), or `TIMEOUT` when no answer came in
    /// time.
    pub dns_rcode: std::borrow::Cow<'static, str>,
    /// From the query's capture to the answer's; null for a timeout.
    pub dns_latency_us: Option<u64>,
    /// Records in the answer section; null for a timeout.
    pub dns_answers: Option<u16>,
    /// The client's workload, as for packet rows.
    pub workload: Workload,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PacketRecord {
        PacketRecord {
            ts: UnixNanos(1_795_000_000_000_000_042),
            packet_size: 60,
            ether_type: 0x0806,
            src_mac: Some(MacAddr([0xAA, 0xBB, 0xCC, 0, 1, 2])),
            dst_mac: Some(MacAddr([0xff; 6])),
            src_ip: Some("10.0.0.1".parse().unwrap()),
            dst_ip: Some("fe80::1".parse().unwrap()),
            packet_type: PacketType::Arp,
            vlan_id: Some(42),
            ..PacketRecord::default()
        }
    }

    #[test]
    fn json_values_have_their_text_forms() {
        let line = serde_json::to_string(&sample()).unwrap();
        assert_eq!(
            line,
            r#"{"ts":"2026-11-18T11:06:40.000000042Z","host":"","interface":"","direction":"ingress","application":"UNKNOWN","packet_type":"ARP","packet_size":60,"ether_type":2054,"src_mac":"aa:bb:cc:00:01:02","dst_mac":"ff:ff:ff:ff:ff:ff","vlan_id":42,"protocol":null,"src_ip":"10.0.0.1","dst_ip":"fe80::1","src_port":null,"dst_port":null,"tcp_flags":null,"tunnel":null,"inner_src_ip":null,"inner_dst_ip":null,"inner_protocol":null,"inner_src_port":null,"inner_dst_port":null,"mpls_labels":null,"sample_rate":1,"cgroup_id":null,"container_id":null,"pod_uid":null,"pod":null,"namespace":null}"#
        );
    }

    #[test]
    fn absent_macs_and_mpls_labels_in_json() {
        let r = PacketRecord {
            mpls_labels: Some(MplsLabels::from([16, 1_048_575, 3])),
            ..PacketRecord::default()
        };
        let v = serde_json::to_value(r).unwrap();
        assert_eq!(v["src_mac"], serde_json::Value::Null);
        assert_eq!(v["dst_mac"], serde_json::Value::Null);
        assert_eq!(v["mpls_labels"], "16/1048575/3");
    }

    #[test]
    fn mpls_label_stack_is_bounded() {
        let mut s = MplsLabels::default();
        assert_eq!(s.to_string(), "");
        for l in 0..MplsLabels::MAX as u32 {
            assert!(s.push(l));
        }
        assert!(s.is_full());
        assert!(!s.push(99), "full");
        assert_eq!(s.to_string(), "0/1/2/3/4/5/6/7");
        assert_eq!(
            MplsLabels::from([0x1f_ffff]).as_slice(),
            [0xf_ffff],
            "20 bits"
        );
    }
}
