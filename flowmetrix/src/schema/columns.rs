//! The `packet_data` and `flow_data` tables, each declared once: one list of columns per
//! table ([`SCHEMA`], [`FLOW_SCHEMA`]), each column its definition ([`Def`]: name, type,
//! role, index) and how to read its value from a row ([`Datum`]). The row insert
//! ([`super::table`]), the Arrow batch ([`super::arrow`]), the JSON line ([`super::json`])
//! and the DDL text ([`super::ddl`]) are all derived from these lists.

use greptimedb_ingester::api::v1::{ColumnDataType, SemanticType, Value, value::ValueData};
use std::net::IpAddr;

use std::sync::Arc;

use crate::record::{
    Direction, DnsRecord, FlowRecord, MacAddr, MplsLabels, PacketRecord, PacketType, Tunnel,
    UnixNanos,
};

/// An index on one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Index {
    /// Value → rows: for low-cardinality columns queries filter on.
    Inverted,
    /// A bloom filter per granule: equality lookups of high-cardinality values (IPs).
    Bloom,
}

/// What a column is, whichever table holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Def {
    pub name: &'static str,
    pub data_type: ColumnDataType,
    pub semantic: SemanticType,
    /// A tag's place in the primary key.
    pub key: u8,
    pub index: Option<Index>,
}

impl Def {
    /// The time index: nanoseconds, never null.
    pub const fn time(name: &'static str) -> Self {
        Self::new(
            name,
            ColumnDataType::TimestampNanosecond,
            SemanticType::Timestamp,
        )
    }

    /// A tag (a string), at place `key` of the primary key.
    pub const fn tag(name: &'static str, key: u8) -> Self {
        Self {
            key,
            ..Self::new(name, ColumnDataType::String, SemanticType::Tag)
        }
    }

    /// A field.
    pub const fn field(name: &'static str, data_type: ColumnDataType) -> Self {
        Self::new(name, data_type, SemanticType::Field)
    }

    const fn new(name: &'static str, data_type: ColumnDataType, semantic: SemanticType) -> Self {
        Self {
            name,
            data_type,
            semantic,
            key: 0,
            index: None,
        }
    }

    /// With an inverted index.
    pub const fn inverted(self) -> Self {
        Self {
            index: Some(Index::Inverted),
            ..self
        }
    }

    /// With a bloom skipping index.
    pub const fn bloom(self) -> Self {
        Self {
            index: Some(Index::Bloom),
            ..self
        }
    }
}

/// One value of a row, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datum<'a> {
    Null,
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    /// Nanoseconds since the Unix epoch.
    Ts(i64),
    Str(&'a str),
    Ip(IpAddr),
    Mac(MacAddr),
    Labels(&'a MplsLabels),
}

impl Datum<'_> {
    /// The time of a timestamp value.
    pub fn ts(self) -> Option<i64> {
        match self {
            Self::Ts(t) => Some(t),
            _ => None,
        }
    }
}

/// A value as the row insert sends it: addresses, labels and names as text.
#[inline(always)]
pub fn value(d: Datum<'_>) -> Value {
    let v = match d {
        Datum::Null => None,
        Datum::U8(v) => Some(ValueData::U8Value(v.into())),
        Datum::U16(v) => Some(ValueData::U16Value(v.into())),
        Datum::U32(v) => Some(ValueData::U32Value(v)),
        Datum::U64(v) => Some(ValueData::U64Value(v)),
        Datum::Ts(t) => Some(ValueData::TimestampNanosecondValue(t)),
        Datum::Str(s) => Some(ValueData::StringValue(s.to_owned())),
        Datum::Ip(ip) => Some(ValueData::StringValue(ip.to_string())),
        Datum::Mac(m) => Some(ValueData::StringValue(m.to_string())),
        Datum::Labels(l) => Some(ValueData::StringValue(l.to_string())),
    };
    Value { value_data: v }
}

macro_rules! datum_from {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for Datum<'_> {
            fn from(v: $t) -> Self {
                Self::$v(v)
            }
        }
    )*};
}
datum_from!(u8 => U8, u16 => U16, u32 => U32, u64 => U64, IpAddr => Ip, MacAddr => Mac);

impl<'a> From<&'a MplsLabels> for Datum<'a> {
    fn from(v: &'a MplsLabels) -> Self {
        Self::Labels(v)
    }
}

impl<'a> From<&'a Arc<str>> for Datum<'a> {
    fn from(v: &'a Arc<str>) -> Self {
        Self::Str(v)
    }
}

impl From<&'static str> for Datum<'_> {
    fn from(v: &'static str) -> Self {
        Self::Str(v)
    }
}

impl From<UnixNanos> for Datum<'_> {
    fn from(v: UnixNanos) -> Self {
        Self::Ts(v.0)
    }
}

macro_rules! datum_from_name {
    ($($t:ty),*) => {$(
        impl From<$t> for Datum<'_> {
            fn from(v: $t) -> Self {
                Self::Str(v.as_str())
            }
        }
    )*};
}
datum_from_name!(PacketType, Direction, Tunnel);

impl<'a, T: Into<Datum<'a>>> From<Option<T>> for Datum<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

/// A column of the table of `R` rows: its definition, and how to read it from a row.
pub struct Column<R> {
    pub def: Def,
    pub get: fn(&R) -> Datum<'_>,
}

impl<R> Column<R> {
    pub const fn new(def: Def, get: fn(&R) -> Datum<'_>) -> Self {
        Self { def, get }
    }

    /// This column's value in `row`.
    #[inline]
    pub fn get<'r>(&self, row: &'r R) -> Datum<'r> {
        (self.get)(row)
    }
}

impl<R> std::ops::Deref for Column<R> {
    type Target = Def;

    fn deref(&self) -> &Def {
        &self.def
    }
}

impl<R> std::fmt::Debug for Column<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.def.fmt(f)
    }
}

/// The columns both tables have: named, typed and indexed here once. `host`, `interface`,
/// `direction` and `application` are the few low-cardinality series keys every dashboard
/// groups by (the primary key, in this order); IPs are fields with a bloom filter;
/// protocol and destination port get inverted indexes for `WHERE` filters.
pub mod shared {
    use super::{ColumnDataType as T, Def};

    pub const TS: Def = Def::time("ts");
    pub const HOST: Def = Def::tag("host", 0).inverted();
    pub const INTERFACE: Def = Def::tag("interface", 1).inverted();
    pub const DIRECTION: Def = Def::tag("direction", 2).inverted();
    pub const APPLICATION: Def = Def::tag("application", 3).inverted();
    pub const VLAN_ID: Def = Def::field("vlan_id", T::Uint16);
    pub const ETHER_TYPE: Def = Def::field("ether_type", T::Uint16);
    pub const SRC_IP: Def = Def::field("src_ip", T::String).bloom();
    pub const DST_IP: Def = Def::field("dst_ip", T::String).bloom();
    pub const PROTOCOL: Def = Def::field("protocol", T::Uint8).inverted();
    pub const SRC_PORT: Def = Def::field("src_port", T::Uint16);
    pub const DST_PORT: Def = Def::field("dst_port", T::Uint16).inverted();
    pub const TCP_FLAGS: Def = Def::field("tcp_flags", T::Uint8);
    /// Workload attribution: fields, not tags. Ids and pod names are high-cardinality, and
    /// a table that exists gains a column by `ALTER TABLE … ADD COLUMN` (or the insert),
    /// which adds fields and leaves the primary key (already five tags in `packet_data`) as
    /// it is. Namespaces are few: an inverted index for `WHERE "namespace" = …`; ids and
    /// pod names: bloom filters for equality lookups.
    pub const CGROUP_ID: Def = Def::field("cgroup_id", T::Uint64);
    pub const CONTAINER_ID: Def = Def::field("container_id", T::String).bloom();
    pub const POD_UID: Def = Def::field("pod_uid", T::String).bloom();
    pub const POD: Def = Def::field("pod", T::String).bloom();
    pub const NAMESPACE: Def = Def::field("namespace", T::String).inverted();
}

/// A table's column list, `DEFINITION => |row| value,` one line a column, as a `const`
/// slice of [`Column`]s; and, from the same lines, the row insert's values of a row
/// ([`super::table::Table::encode_row`]) read field by field without going through the
/// column getters one call at a time (that path is the hot one of row inserts).
macro_rules! table {
    // `; workload` at the end of a list: the workload columns every table ends with (each
    // row type has a `workload: Workload`), written here once.
    ($(#[$m:meta])* pub const $name:ident: $rec:ty = [$($def:expr => |$r:ident| $get:expr,)* ; workload]) => {
        table! {
            $(#[$m])*
            pub const $name: $rec = [
                $($def => |$r| $get,)*
                CGROUP_ID => |r| r.workload.cgroup_id.into(),
                CONTAINER_ID => |r| r.workload.container_id.as_ref().into(),
                POD_UID => |r| r.workload.pod_uid.as_ref().into(),
                POD => |r| r.workload.pod.as_ref().into(),
                NAMESPACE => |r| r.workload.namespace.as_ref().into(),
            ]
        }
    };
    ($(#[$m:meta])* pub const $name:ident: $rec:ty = [$($def:expr => |$r:ident| $get:expr,)*]) => {
        $(#[$m])*
        pub const $name: &[Column<$rec>] = &[$(Column::new($def, |$r| $get)),*];

        impl $rec {
            /// The row insert's values of this row, in column order.
            pub(crate) fn insert_values(&self) -> Vec<Value> {
                vec![$({
                    let $r = self;
                    value($get)
                }),*]
            }
        }

        /// The JSON object of this row: keys the column names, in order (the values'
        /// text forms in [`super::json`]). Made from the same lines, field by field, as
        /// the row insert: a call through each column's getter cost 12 % of a packet row.
        impl serde::Serialize for $rec {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeStruct as _;
                let mut o = s.serialize_struct(stringify!($rec), $name.len())?;
                let mut names = $name.iter().map(|c| c.name);
                $({
                    let $r = self;
                    let d: Datum<'_> = $get;
                    o.serialize_field(names.next().unwrap_or(""), &d)?;
                })*
                o.end()
            }
        }
    };
}

use ColumnDataType as T;
use shared::*;

/// A field of one table (a shared one is in [`shared`]).
const fn field(name: &'static str, data_type: ColumnDataType) -> Def {
    Def::field(name, data_type)
}

table! {
/// The `packet_data` table, in [`PacketRecord`] field order. `ts` is the time index;
/// the shared tags and `packet_type` (the last key) are the primary key, first after `ts`
/// in key order as in [`FLOW_SCHEMA`], so a JSON line of either table starts `ts`, `host`,
/// `interface`, `direction`, `application`; IPs and ports are fields. Columns added later (`vlan_id`, `tunnel`, `inner_*`, `mpls_labels`, `host`,
/// `interface`, `direction`) are added to an existing table by GreptimeDB's insert, and a
/// table whose columns have other roles (the Go original made `src_ip` and `dst_port`
/// tags) is written as it is ([`crate::sink::greptime::shapes`]).
///
/// To add a column: add the field to [`PacketRecord`], then one line here, where it goes
/// in the table — `field("name", T::Type) => |r| r.name.into(),` (a column
/// `flow_data` has too: a [`shared`] definition, and a line in [`FLOW_SCHEMA`]). The row
/// insert, the Arrow batch, the JSON key and the `CREATE TABLE` text follow from it. A
/// list ends `; workload`: the workload columns (`cgroup_id` … `namespace`), the same in
/// every table, written once in `table!`. A value whose [`Datum`] does not fit the column's
/// type fails the tests here (and the bulk
/// path, as an error).
pub const SCHEMA: PacketRecord = [
    TS => |r| r.ts.into(),
    HOST => |r| (&r.host).into(),
    INTERFACE => |r| (&r.interface).into(),
    DIRECTION => |r| r.direction.into(),
    APPLICATION => |r| r.application.into(),
    PACKET_TYPE => |r| r.packet_type.into(),
    field("packet_size", T::Uint16) => |r| r.packet_size.into(),
    ETHER_TYPE => |r| r.ether_type.into(),
    field("src_mac", T::String) => |r| r.src_mac.into(),
    field("dst_mac", T::String) => |r| r.dst_mac.into(),
    VLAN_ID => |r| r.vlan_id.into(),
    PROTOCOL => |r| r.protocol.into(),
    SRC_IP => |r| r.src_ip.into(),
    DST_IP => |r| r.dst_ip.into(),
    SRC_PORT => |r| r.src_port.into(),
    DST_PORT => |r| r.dst_port.into(),
    TCP_FLAGS => |r| r.tcp_flags.into(),
    field("tunnel", T::String) => |r| r.tunnel.into(),
    field("inner_src_ip", T::String) => |r| r.inner_src_ip.into(),
    field("inner_dst_ip", T::String) => |r| r.inner_dst_ip.into(),
    field("inner_protocol", T::Uint8) => |r| r.inner_protocol.into(),
    field("inner_src_port", T::Uint16) => |r| r.inner_src_port.into(),
    field("inner_dst_port", T::Uint16) => |r| r.inner_dst_port.into(),
    field("mpls_labels", T::String) => |r| r.mpls_labels.as_ref().into(),
    field("sample_rate", T::Uint32) => |r| r.sample_rate.into(),
    ; workload
]
}

/// `packet_data`'s own tag: the last of its primary key.
pub const PACKET_TYPE: Def = Def::tag("packet_type", 4).inverted();

table! {
/// The `flow_data` table, in [`FlowRecord`] field order: the shared columns (the same
/// primary key without the packet type) and the flow's counts. `ts` (the interval's end)
/// is the time index. To add a column, as for [`SCHEMA`].
pub const FLOW_SCHEMA: FlowRecord = [
    TS => |r| r.ts.into(),
    HOST => |r| (&r.host).into(),
    INTERFACE => |r| (&r.interface).into(),
    DIRECTION => |r| r.direction.into(),
    APPLICATION => |r| r.application.into(),
    VLAN_ID => |r| r.vlan_id.into(),
    ETHER_TYPE => |r| r.ether_type.into(),
    SRC_IP => |r| r.src_ip.into(),
    DST_IP => |r| r.dst_ip.into(),
    PROTOCOL => |r| r.protocol.into(),
    SRC_PORT => |r| r.src_port.into(),
    DST_PORT => |r| r.dst_port.into(),
    PACKETS => |r| r.packets.into(),
    BYTES => |r| r.bytes.into(),
    field("first_seen", T::TimestampNanosecond) => |r| r.first_seen.into(),
    field("last_seen", T::TimestampNanosecond) => |r| r.last_seen.into(),
    TCP_FLAGS => |r| r.tcp_flags.into(),
    field("interval_ms", T::Uint32) => |r| r.interval_ms.into(),
    TCP_HANDSHAKE_US => |r| r.health.tcp_handshake_us.into(),
    TCP_SYN_RETRANSMITS => |r| r.health.tcp_syn_retransmits.into(),
    TCP_RETRANSMITS => |r| r.health.tcp_retransmits.into(),
    TCP_RTT_US => |r| r.health.tcp_rtt_us.into(),
    DROP_PACKETS => |r| r.health.drop_packets.into(),
    DROP_BYTES => |r| r.health.drop_bytes.into(),
    DROP_REASON => |r| r.health.drop_reason.as_ref().into(),
    ; workload
]
}

/// `flow_data`'s exact counts (the rollups sum them).
pub const PACKETS: Def = field("packets", T::Uint64);
pub const BYTES: Def = field("bytes", T::Uint64);

/// `flow_data`'s how-well columns ([`crate::record::FlowHealth`]), which the rollups and the
/// dashboard read. Fields: a table made before them gains them by `ALTER TABLE … ADD
/// COLUMN`. Drop reasons are few: an inverted index for `WHERE drop_reason = …`.
pub const TCP_HANDSHAKE_US: Def = field("tcp_handshake_us", T::Uint64);
pub const TCP_SYN_RETRANSMITS: Def = field("tcp_syn_retransmits", T::Uint32);
pub const TCP_RETRANSMITS: Def = field("tcp_retransmits", T::Uint32);
pub const TCP_RTT_US: Def = field("tcp_rtt_us", T::Uint64);
pub const DROP_PACKETS: Def = field("drop_packets", T::Uint64);
pub const DROP_BYTES: Def = field("drop_bytes", T::Uint64);
pub const DROP_REASON: Def = field("drop_reason", T::String).inverted();

table! {
/// The `dns_data` table, in [`DnsRecord`] field order: one row per transaction, the client
/// the source. The shared keys without `application` are the primary key; names and
/// addresses are fields with a bloom filter (equality lookups), the response code a field
/// with an inverted index (`WHERE dns_rcode != 'NOERROR'`). To add a column, as for
/// [`SCHEMA`].
pub const DNS_SCHEMA: DnsRecord = [
    TS => |r| r.ts.into(),
    HOST => |r| (&r.host).into(),
    INTERFACE => |r| (&r.interface).into(),
    DIRECTION => |r| r.direction.into(),
    SRC_IP => |r| r.src_ip.into(),
    DST_IP => |r| r.dst_ip.into(),
    PROTOCOL => |r| r.protocol.into(),
    SRC_PORT => |r| r.src_port.into(),
    DST_PORT => |r| r.dst_port.into(),
    field("dns_id", T::Uint16) => |r| r.dns_id.into(),
    DNS_QNAME => |r| Datum::Str(&r.dns_qname),
    field("dns_qtype", T::String) => |r| Datum::Str(&r.dns_qtype),
    DNS_RCODE => |r| Datum::Str(&r.dns_rcode),
    DNS_LATENCY_US => |r| r.dns_latency_us.into(),
    field("dns_answers", T::Uint16) => |r| r.dns_answers.into(),
    ; workload
]
}

/// `dns_data`'s columns the rollup and the dashboard read.
pub const DNS_QNAME: Def = field("dns_qname", T::String).bloom();
pub const DNS_RCODE: Def = field("dns_rcode", T::String).inverted();
pub const DNS_LATENCY_US: Def = field("dns_latency_us", T::Uint64);

#[cfg(test)]
pub(crate) mod tests {
    use greptimedb_ingester::api::v1::value::ValueData;

    use super::*;
    use crate::{
        record::{MplsLabels, PacketType, Tunnel, UnixNanos},
        schema::encode_row,
    };

    /// A packet row with every column set.
    pub(crate) fn record() -> PacketRecord {
        PacketRecord {
            ts: UnixNanos(1_795_000_000_123_456_789),
            packet_size: 1514,
            ether_type: 0x0800,
            src_mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
            dst_mac: Some(MacAddr([2, 0, 0, 0, 0, 2])),
            protocol: Some(6),
            src_ip: Some("10.0.0.1".parse().unwrap()),
            dst_ip: Some("10.0.0.2".parse().unwrap()),
            src_port: Some(40_000),
            dst_port: Some(443),
            tcp_flags: Some(0x18),
            packet_type: PacketType::Ipv4,
            application: "HTTPS",
            vlan_id: Some(100),
            tunnel: Some(Tunnel::Vxlan),
            inner_src_ip: Some("fd00::1".parse().unwrap()),
            inner_dst_ip: Some("fd00::2".parse().unwrap()),
            inner_protocol: Some(17),
            inner_src_port: Some(5353),
            inner_dst_port: Some(53),
            mpls_labels: Some(MplsLabels::from([16, 1001])),
            sample_rate: 10,
            host: "node-1".into(),
            interface: "eth0".into(),
            direction: crate::record::Direction::Egress,
            workload: crate::record::Workload {
                cgroup_id: Some(12_345),
                container_id: Some("0123456789abcdef".repeat(4).into()),
                pod_uid: Some("5f1c8a3e-2b4d-4c6e-9f01-23456789abcd".into()),
                pod: Some("checkout-7d9f".into()),
                namespace: Some("shop".into()),
            },
        }
    }

    /// A DNS transaction answered, every column set.
    pub(crate) fn dns_record() -> DnsRecord {
        DnsRecord {
            ts: UnixNanos(1_795_000_000_123_456_789),
            host: "node-1".into(),
            interface: "eth0".into(),
            direction: Direction::Egress,
            src_ip: "10.0.0.2".parse().unwrap(),
            dst_ip: "10.0.0.1".parse().unwrap(),
            protocol: 17,
            src_port: 40_000,
            dst_port: 53,
            dns_id: 0xbeef,
            dns_qname: "example.com".into(),
            dns_qtype: "AAAA".into(),
            dns_rcode: "NXDOMAIN".into(),
            dns_latency_us: Some(21_000),
            dns_answers: Some(0),
            workload: crate::record::Workload::default(),
        }
    }

    #[test]
    fn a_dns_row_in_json_and_in_the_row_insert() {
        assert_eq!(
            serde_json::to_string(&dns_record()).unwrap(),
            r#"{"ts":"2026-11-18T11:06:40.123456789Z","host":"node-1","interface":"eth0","direction":"egress","src_ip":"10.0.0.2","dst_ip":"10.0.0.1","protocol":17,"src_port":40000,"dst_port":53,"dns_id":48879,"dns_qname":"example.com","dns_qtype":"AAAA","dns_rcode":"NXDOMAIN","dns_latency_us":21000,"dns_answers":0,"cgroup_id":null,"container_id":null,"pod_uid":null,"pod":null,"namespace":null}"#
        );
        let timeout = DnsRecord {
            dns_rcode: "TIMEOUT".into(),
            dns_latency_us: None,
            dns_answers: None,
            ..dns_record()
        };
        let row = encode_row(&timeout);
        for (v, c) in row.values.iter().zip(DNS_SCHEMA) {
            match v.value_data.as_ref() {
                Some(v) => assert!(fits(v, c.data_type), "{}: {v:?}", c.name),
                None => assert!(
                    ["dns_latency_us", "dns_answers"].contains(&c.name)
                        || c.name == "cgroup_id"
                        || c.semantic == SemanticType::Field
                            && c.data_type == ColumnDataType::String,
                    "{}",
                    c.name
                ),
            }
        }
        let tags: Vec<&str> = DNS_SCHEMA
            .iter()
            .filter(|c| c.semantic == SemanticType::Tag)
            .map(|c| c.name)
            .collect();
        assert_eq!(tags, ["host", "interface", "direction"]);
    }

    #[test]
    fn schema_matches_the_record_columns_in_order() {
        let names: Vec<&str> = SCHEMA.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "ts",
                "host",
                "interface",
                "direction",
                "application",
                "packet_type",
                "packet_size",
                "ether_type",
                "src_mac",
                "dst_mac",
                "vlan_id",
                "protocol",
                "src_ip",
                "dst_ip",
                "src_port",
                "dst_port",
                "tcp_flags",
                "tunnel",
                "inner_src_ip",
                "inner_dst_ip",
                "inner_protocol",
                "inner_src_port",
                "inner_dst_port",
                "mpls_labels",
                "sample_rate",
                "cgroup_id",
                "container_id",
                "pod_uid",
                "pod",
                "namespace",
            ]
        );
        let tags: Vec<&str> = SCHEMA
            .iter()
            .filter(|c| c.semantic == SemanticType::Tag)
            .map(|c| c.name)
            .collect();
        assert_eq!(
            tags,
            [
                "host",
                "interface",
                "direction",
                "application",
                "packet_type"
            ]
        );
        let ts: Vec<&Column<PacketRecord>> = SCHEMA
            .iter()
            .filter(|c| c.semantic == SemanticType::Timestamp)
            .collect();
        assert_eq!(ts.len(), 1);
        assert_eq!(ts[0].name, "ts");
        // The columns both tables have come first, in the same order in both.
        let flow: Vec<&str> = FLOW_SCHEMA.iter().map(|c| c.name).take(5).collect();
        assert_eq!(names[..5], flow[..]);
    }

    /// Whether a value may be stored in a column of this type.
    fn fits(v: &ValueData, t: ColumnDataType) -> bool {
        matches!(
            (v, t),
            (
                ValueData::TimestampNanosecondValue(_),
                ColumnDataType::TimestampNanosecond
            ) | (ValueData::U8Value(0..=255), ColumnDataType::Uint8)
                | (ValueData::U16Value(0..=65535), ColumnDataType::Uint16)
                | (ValueData::U32Value(_), ColumnDataType::Uint32)
                | (ValueData::U64Value(_), ColumnDataType::Uint64)
                | (ValueData::StringValue(_), ColumnDataType::String)
        )
    }

    #[test]
    fn every_value_has_its_column_type() {
        let row = encode_row(&record());
        assert_eq!(row.values.len(), SCHEMA.len());
        for (v, c) in row.values.iter().zip(SCHEMA) {
            let v = v.value_data.as_ref().expect("all set in this record");
            assert!(
                fits(v, c.data_type),
                "{}: {v:?} in {:?}",
                c.name,
                c.data_type
            );
        }
        let json = serde_json::to_value(record()).unwrap();
        let text = |i: usize| match &row.values[i].value_data {
            Some(ValueData::StringValue(s)) => s.clone(),
            other => panic!("{other:?}"),
        };
        for (i, c) in SCHEMA.iter().enumerate() {
            if c.data_type == ColumnDataType::String {
                assert_eq!(json[c.name], text(i), "{}", c.name);
            }
        }
    }

    #[test]
    fn absent_values_are_null() {
        let r = PacketRecord {
            ts: record().ts,
            ..PacketRecord::default()
        };
        let row = encode_row(&r);
        for name in [
            "src_mac",
            "dst_mac",
            "mpls_labels",
            "protocol",
            "src_ip",
            "dst_ip",
            "src_port",
            "dst_port",
            "tcp_flags",
            "cgroup_id",
            "container_id",
            "pod_uid",
            "pod",
            "namespace",
        ] {
            let i = SCHEMA.iter().position(|c| c.name == name).unwrap();
            assert_eq!(row.values[i].value_data, None, "{name}");
        }
    }
}
