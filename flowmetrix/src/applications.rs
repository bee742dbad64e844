//! The port → application table: the application guessed from transport ports, the
//! destination port first, then the source.

use std::collections::HashMap;

/// Well-known ports: the original tool's table, plus the services users see every day on a
/// server or cluster network (discovery, time, messaging, Kubernetes, monitoring, VPNs,
/// GreptimeDB itself). Sorted by port; a port has one name.
const TABLE: &[(u16, &str)] = &[
    (20, "FTP-DATA"),
    (21, "FTP"),
    (22, "SSH"),
    (23, "TELNET"),
    (25, "SMTP"),
    (53, "DNS"),
    (67, "DHCP"),
    (68, "DHCP"),
    (69, "TFTP"),
    (80, "HTTP"),
    (88, "KERBEROS"),
    (110, "POP3"),
    (123, "NTP"),
    (137, "NETBIOS-NS"),
    (138, "NETBIOS-DGM"),
    (139, "NETBIOS-SSN"),
    (143, "IMAP"),
    (161, "SNMP"),
    (162, "SNMPTRAP"),
    (179, "BGP"),
    (389, "LDAP"),
    (443, "HTTPS"),
    (445, "SMB"),
    (465, "SMTPS"),
    (500, "IKE"),
    (514, "SYSLOG"),
    (587, "SUBMISSION"),
    (636, "LDAPS"),
    (853, "DNS-OVER-TLS"),
    (873, "RSYNC"),
    (993, "IMAPS"),
    (995, "POP3S"),
    (1194, "OpenVPN"),
    (1433, "MSSQL"),
    (1521, "ORACLE"),
    (1812, "RADIUS"),
    (1813, "RADIUS-ACCT"),
    (1883, "MQTT"),
    (1900, "SSDP"),
    (2049, "NFS"),
    (2181, "ZooKeeper"),
    (2379, "etcd"),
    (2380, "etcd"),
    (3000, "Grafana"),
    (3306, "MySQL"),
    (3389, "RDP"),
    (3478, "STUN"),
    (4000, "GreptimeDB-HTTP"),
    (4001, "GreptimeDB"),
    (4002, "GreptimeDB-MySQL"),
    (4003, "GreptimeDB-PG"),
    (4222, "NATS"),
    (4317, "OTLP"),
    (4318, "OTLP-HTTP"),
    (4500, "IPSEC-NAT-T"),
    (4789, "VXLAN"),
    (5044, "Beats"),
    (5060, "SIP"),
    (5061, "SIPS"),
    (5353, "mDNS"),
    (5355, "LLMNR"),
    (5432, "PostgreSQL"),
    (5672, "AMQP"),
    (5900, "VNC"),
    (6081, "GENEVE"),
    (6379, "Redis"),
    (6443, "Kubernetes-API"),
    (6514, "SYSLOG-TLS"),
    (8080, "HTTP-ALT"),
    (8086, "InfluxDB"),
    (8443, "HTTPS-ALT"),
    (8500, "Consul"),
    (8883, "MQTTS"),
    (9090, "Prometheus"),
    (9092, "Kafka"),
    (9093, "Alertmanager"),
    (9100, "node-exporter"),
    (9200, "Elasticsearch"),
    (9300, "Elasticsearch-transport"),
    (10250, "kubelet"),
    (11211, "Memcached"),
    (15672, "RabbitMQ-mgmt"),
    (27017, "MongoDB"),
    (51820, "WireGuard"),
];

/// Name used when no port matches.
pub const UNKNOWN: &str = "UNKNOWN";

/// The port → application table the decode stage uses: the built-in [`TABLE`] plus the
/// config file's `[applications]` overrides. Every port's application is an index into
/// `names` (0: none), built once: a lookup is one load from a 256 KiB array instead of a
/// search (two per packet, at line rate).
pub struct Applications {
    index: Box<[u32]>,
    names: Vec<&'static str>,
}

impl Default for Applications {
    /// The built-in table alone.
    fn default() -> Self {
        Self::with(std::iter::empty())
    }
}

impl std::fmt::Debug for Applications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applications")
            .field("names", &self.names.len())
            .finish()
    }
}

impl Applications {
    /// The built-in table with `overrides` (port, name) added or replacing entries.
    pub fn new(overrides: impl IntoIterator<Item = (u16, String)>) -> Self {
        // Leaked once at start-up: rows carry `&'static str` names.
        Self::with(
            overrides
                .into_iter()
                .map(|(p, n)| (p, &*Box::leak(n.into_boxed_str()))),
        )
    }

    fn with(overrides: impl IntoIterator<Item = (u16, &'static str)>) -> Self {
        let mut t = Self {
            index: vec![0; 1 << 16].into_boxed_slice(),
            names: Vec::new(),
        };
        let mut seen: HashMap<&'static str, u32> = HashMap::new();
        for (port, name) in TABLE.iter().copied().chain(overrides) {
            let next = t.names.len();
            let i = *seen.entry(name).or_insert_with(|| {
                t.names.push(name);
                // Fewer names than ports plus the table: always fits.
                u32::try_from(next + 1).unwrap_or(u32::MAX)
            });
            t.index[usize::from(port)] = i;
        }
        t
    }

    fn lookup(&self, port: u16) -> Option<&'static str> {
        let i = self.index[usize::from(port)];
        (i != 0).then(|| self.names[i as usize - 1])
    }

    /// The application for a packet with these ports: destination port first, then source.
    pub fn application(&self, src_port: Option<u16>, dst_port: Option<u16>) -> &'static str {
        dst_port
            .and_then(|p| self.lookup(p))
            .or_else(|| src_port.and_then(|p| self.lookup(p)))
            .unwrap_or(UNKNOWN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn application(src: Option<u16>, dst: Option<u16>) -> &'static str {
        Applications::default().application(src, dst)
    }

    #[test]
    fn table_is_sorted_and_unique() {
        assert!(TABLE.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn original_ports_are_all_there() {
        let original = [
            (20, "FTP-DATA"),
            (21, "FTP"),
            (22, "SSH"),
            (23, "TELNET"),
            (25, "SMTP"),
            (53, "DNS"),
            (80, "HTTP"),
            (443, "HTTPS"),
            (110, "POP3"),
            (143, "IMAP"),
            (161, "SNMP"),
            (162, "SNMPTRAP"),
            (389, "LDAP"),
            (636, "LDAPS"),
            (3306, "MySQL"),
            (5432, "PostgreSQL"),
            (27017, "MongoDB"),
            (6379, "Redis"),
            (11211, "Memcached"),
        ];
        for (port, name) in original {
            assert_eq!(application(None, Some(port)), name, "port {port}");
        }
    }

    #[test]
    fn everyday_services_are_named() {
        for (port, name) in [
            (5353, "mDNS"),
            (123, "NTP"),
            (67, "DHCP"),
            (68, "DHCP"),
            (514, "SYSLOG"),
            (9092, "Kafka"),
            (2379, "etcd"),
            (2380, "etcd"),
            (6443, "Kubernetes-API"),
            (10250, "kubelet"),
            (9090, "Prometheus"),
            (9100, "node-exporter"),
            (3000, "Grafana"),
            (9200, "Elasticsearch"),
            (5672, "AMQP"),
            (1883, "MQTT"),
            (5060, "SIP"),
            (3389, "RDP"),
            (5900, "VNC"),
            (2049, "NFS"),
            (2181, "ZooKeeper"),
            (4222, "NATS"),
            (179, "BGP"),
            (1194, "OpenVPN"),
            (51820, "WireGuard"),
            (8500, "Consul"),
            (4001, "GreptimeDB"),
        ] {
            assert_eq!(application(Some(50_000), Some(port)), name, "port {port}");
        }
        // mDNS goes from 5353 to 5353: named from either side.
        assert_eq!(application(Some(5353), Some(5353)), "mDNS");
    }

    #[test]
    fn overrides_replace_and_add_names() {
        let t = Applications::new(
            [(80, "WEB"), (9999, "CUSTOM"), (22, "SSH")].map(|(p, n)| (p, n.to_owned())),
        );
        assert_eq!(t.lookup(80), Some("WEB"));
        assert_eq!(t.lookup(9999), Some("CUSTOM"));
        assert_eq!(t.lookup(22), Some("SSH"));
        assert_eq!(t.lookup(443), Some("HTTPS"));
        assert_eq!(t.lookup(0), None);
        assert_eq!(t.lookup(u16::MAX), None);
    }

    #[test]
    fn destination_wins_then_source_then_unknown() {
        assert_eq!(application(Some(53), Some(80)), "HTTP");
        assert_eq!(application(Some(443), Some(50_000)), "HTTPS");
        assert_eq!(application(Some(50_000), Some(50_001)), UNKNOWN);
        assert_eq!(application(None, None), UNKNOWN);
    }
}
