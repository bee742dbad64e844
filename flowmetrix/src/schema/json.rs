//! The JSON form of a row, from its table's column list (the object itself is made by
//! `table!` in [`super::columns`]): one object, keys the column names in table order, absent
//! values null, timestamps as RFC 3339 UTC with nanoseconds,
//! addresses, labels and names as text (the same text the row insert sends).

use serde::{Serialize, Serializer};

use super::columns::Datum;
use crate::record::UnixNanos;

impl Serialize for Datum<'_> {
    // Inlined where each row's field is written, so that the match folds to that column's
    // own kind (a packet row's JSON cost 9 % more through one shared call).
    #[inline(always)]
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Self::Null => s.serialize_none(),
            Self::U8(v) => s.serialize_u8(v),
            Self::U16(v) => s.serialize_u16(v),
            Self::U32(v) => s.serialize_u32(v),
            Self::U64(v) => s.serialize_u64(v),
            Self::Ts(t) => s.serialize_str(&UnixNanos(t).to_rfc3339()),
            Self::Str(v) => s.serialize_str(v),
            Self::Ip(ip) => ip.serialize(s),
            Self::Mac(m) => s.collect_str(&m),
            Self::Labels(l) => s.collect_str(l),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        record::{Direction, FlowRecord},
        schema::columns::{FLOW_SCHEMA, SCHEMA, tests::record},
    };

    #[test]
    fn flow_json_keys_are_the_flow_columns_in_order() {
        let r = FlowRecord {
            ts: UnixNanos(1_795_000_000_000_000_042),
            host: "h".into(),
            interface: "eth0".into(),
            direction: Direction::Egress,
            application: "DNS",
            vlan_id: None,
            ether_type: 0x0800,
            src_ip: Some("10.0.0.1".parse().unwrap()),
            dst_ip: Some("fd00::2".parse().unwrap()),
            protocol: 17,
            src_port: 40_000,
            dst_port: 53,
            packets: 3,
            bytes: 300,
            first_seen: UnixNanos(1),
            last_seen: UnixNanos(2),
            tcp_flags: 0,
            interval_ms: 10_000,
            health: Default::default(),
            workload: crate::record::Workload {
                cgroup_id: Some(7),
                ..Default::default()
            },
        };
        let v = serde_json::to_value(&r).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want: Vec<&str> = FLOW_SCHEMA.iter().map(|c| c.name).collect();
        let mut got = keys.clone();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"ts":"2026-11-18T11:06:40.000000042Z","host":"h","interface":"eth0","direction":"egress","application":"DNS","vlan_id":null,"ether_type":2048,"src_ip":"10.0.0.1","dst_ip":"fd00::2","protocol":17,"src_port":40000,"dst_port":53,"packets":3,"bytes":300,"first_seen":"1970-01-01T00:00:00.000000001Z","last_seen":"1970-01-01T00:00:00.000000002Z","tcp_flags":0,"interval_ms":10000,"tcp_handshake_us":null,"tcp_syn_retransmits":null,"tcp_retransmits":null,"tcp_rtt_us":null,"drop_packets":null,"drop_bytes":null,"drop_reason":null,"cgroup_id":7,"container_id":null,"pod_uid":null,"pod":null,"namespace":null}"#
        );
    }

    #[test]
    fn json_keys_are_the_column_names_in_order() {
        let v = serde_json::to_value(record()).unwrap();
        let mut got: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want: Vec<&str> = SCHEMA.iter().map(|c| c.name).collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
    }
}
