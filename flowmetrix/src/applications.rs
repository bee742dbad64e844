//! The port → application table: the application guessed from transport ports, the
//! destination port first, then the source.

use std::collections::HashMap;

/// Well-known ports: the original tool's table, plus common infrastructure services.
const TABLE: &[(u16, &str)] = &[
    (20, "FTP-DATA"),
    (21, "FTP"),
    (22, "SSH"),
    (23, "TELNET"),
    (25, "SMTP"),
    (53, "DNS"),
    (67, "DHCP"),
    (68, "DHCP"),
    (80, "HTTP"),
    (110, "POP3"),
    (123, "NTP"),
    (143, "IMAP"),
    (161, "SNMP"),
    (162, "SNMPTRAP"),
    (179, "BGP"),
    (389, "LDAP"),
    (443, "HTTPS"),
    (465, "SMTPS"),
    (514, "SYSLOG"),
    (587, "SUBMISSION"),
    (636, "LDAPS"),
    (853, "DNS-OVER-TLS"),
    (993, "IMAPS"),
    (995, "POP3S"),
    (1433, "MSSQL"),
    (1521, "ORACLE"),
    (2049, "NFS"),
    (3306, "MySQL"),
    (3389, "RDP"),
    (4789, "VXLAN"),
    (5432, "PostgreSQL"),
    (5672, "AMQP"),
    (6081, "GENEVE"),
    (6379, "Redis"),
    (8080, "HTTP-ALT"),
    (9092, "Kafka"),
    (9200, "Elasticsearch"),
    (11211, "Memcached"),
    (27017, "MongoDB"),
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
