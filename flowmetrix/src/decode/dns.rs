//! DNS messages (RFC 1035) in a UDP datagram or a TCP segment: the id, whether it is an
//! answer, the first question (name and type), the response code and how many answers.
//! simple-dns reads the message; compression loops, labels over 63 bytes, names over 255
//! and section counts that promise more records than the message holds are its errors —
//! [`DnsError`]s here, never a panic.

use std::borrow::Cow;

use simple_dns::{PacketFlag, QTYPE};

/// What a DNS message says, as far as a transaction row needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    /// An answer (QR set), not a query.
    pub response: bool,
    /// The first question's name: lower case, without the trailing dot (`""` is the root).
    pub qname: String,
    pub qtype: u16,
    /// The response code in the header (0–15; the EDNS extension past 15 is not read).
    pub rcode: u16,
    /// Records in the answer section.
    pub answers: u16,
}

/// How the message travelled: TCP messages start with a two-byte length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DnsError {
    /// A TCP segment that holds less than the message its length prefix announces (the rest
    /// in later segments, or cut by the snap length).
    #[error("DNS message cut short: {have} of {want} bytes")]
    Short { have: usize, want: usize },
    #[error("malformed DNS message: {0}")]
    Malformed(String),
    #[error("DNS message without a question")]
    NoQuestion,
}

/// Parses the DNS message in `payload`, a UDP datagram's or a TCP segment's payload.
pub fn parse(payload: &[u8], transport: Transport) -> Result<Message, DnsError> {
    let message = match transport {
        Transport::Udp => payload,
        Transport::Tcp => {
            let (len, rest) = payload.split_first_chunk::<2>().ok_or(DnsError::Short {
                have: payload.len(),
                want: 2,
            })?;
            let want = usize::from(u16::from_be_bytes(*len));
            rest.get(..want).ok_or(DnsError::Short {
                have: rest.len(),
                want,
            })?
        }
    };
    counts_fit(message)?;
    let packet =
        simple_dns::Packet::parse(message).map_err(|e| DnsError::Malformed(e.to_string()))?;
    let question = packet.questions.first().ok_or(DnsError::NoQuestion)?;
    let mut qname = question.qname.to_string();
    qname.make_ascii_lowercase();
    if qname.ends_with('.') {
        qname.pop();
    }
    Ok(Message {
        id: packet.id(),
        response: packet.has_flags(PacketFlag::RESPONSE),
        qname,
        qtype: qtype_number(question.qtype),
        rcode: u16::from(message[3] & 0x0f),
        answers: u16::try_from(packet.answers.len()).unwrap_or(u16::MAX),
    })
}

/// Section counts that promise more than the message can hold are refused before anything is
/// made for them (a question takes at least 5 bytes, a record 11).
fn counts_fit(message: &[u8]) -> Result<(), DnsError> {
    let Some(header) = message.get(..12) else {
        return Err(DnsError::Malformed(format!(
            "{} bytes, less than a header",
            message.len()
        )));
    };
    let count = |at: usize| usize::from(u16::from_be_bytes([header[at], header[at + 1]]));
    let least = count(4) * 5 + (count(6) + count(8) + count(10)) * 11;
    if least > message.len() - 12 {
        return Err(DnsError::Malformed(format!(
            "its section counts need at least {least} bytes, it has {}",
            message.len() - 12
        )));
    }
    Ok(())
}

fn qtype_number(q: QTYPE) -> u16 {
    match q {
        QTYPE::TYPE(t) => u16::from(t),
        QTYPE::IXFR => 251,
        QTYPE::AXFR => 252,
        QTYPE::MAILB => 253,
        QTYPE::MAILA => 254,
        QTYPE::ANY => 255,
    }
}

/// Query types by their IANA mnemonic; others by number.
const QTYPES: &[(u16, &str)] = &[
    (1, "A"),
    (2, "NS"),
    (5, "CNAME"),
    (6, "SOA"),
    (12, "PTR"),
    (13, "HINFO"),
    (15, "MX"),
    (16, "TXT"),
    (17, "RP"),
    (18, "AFSDB"),
    (28, "AAAA"),
    (29, "LOC"),
    (33, "SRV"),
    (35, "NAPTR"),
    (36, "KX"),
    (37, "CERT"),
    (39, "DNAME"),
    (41, "OPT"),
    (43, "DS"),
    (44, "SSHFP"),
    (46, "RRSIG"),
    (47, "NSEC"),
    (48, "DNSKEY"),
    (50, "NSEC3"),
    (51, "NSEC3PARAM"),
    (52, "TLSA"),
    (53, "SMIMEA"),
    (59, "CDS"),
    (60, "CDNSKEY"),
    (61, "OPENPGPKEY"),
    (64, "SVCB"),
    (65, "HTTPS"),
    (99, "SPF"),
    (251, "IXFR"),
    (252, "AXFR"),
    (255, "ANY"),
    (256, "URI"),
    (257, "CAA"),
];

/// Response codes by their IANA name (RFC 6895); others by number.
const RCODES: &[(u16, &str)] = &[
    (0, "NOERROR"),
    (1, "FORMERR"),
    (2, "SERVFAIL"),
    (3, "NXDOMAIN"),
    (4, "NOTIMP"),
    (5, "REFUSED"),
    (6, "YXDOMAIN"),
    (7, "YXRRSET"),
    (8, "NXRRSET"),
    (9, "NOTAUTH"),
    (10, "NOTZONE"),
    (11, "DSOTYPENI"),
    (16, "BADVERS"),
    (17, "BADKEY"),
    (18, "BADTIME"),
    (19, "BADMODE"),
    (20, "BADNAME"),
    (21, "BADALG"),
    (22, "BADTRUNC"),
    (23, "BADCOOKIE"),
];

fn name_of(table: &'static [(u16, &'static str)], n: u16) -> Cow<'static, str> {
    table.iter().find(|(k, _)| *k == n).map_or_else(
        || Cow::Owned(n.to_string()),
        |(_, name)| Cow::Borrowed(*name),
    )
}

/// `A`, `AAAA`, … or the number of a type without a mnemonic here.
pub fn qtype_name(qtype: u16) -> Cow<'static, str> {
    name_of(QTYPES, qtype)
}

/// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, … or the number of a code without a name here.
pub fn rcode_name(rcode: u16) -> Cow<'static, str> {
    name_of(RCODES, rcode)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message: header (id, flags, counts) then `body`.
    fn message(id: u16, flags: u16, counts: [u16; 4], body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&flags.to_be_bytes());
        for c in counts {
            m.extend_from_slice(&c.to_be_bytes());
        }
        m.extend_from_slice(body);
        m
    }

    /// `Example.COM.` type A class IN, as a question.
    const QUESTION: &[u8] = b"\x07Example\x03COM\x00\x00\x01\x00\x01";

    #[test]
    fn a_query_and_its_answer() {
        let q = parse(
            &message(0x1234, 0x0100, [1, 0, 0, 0], QUESTION),
            Transport::Udp,
        )
        .unwrap();
        assert_eq!(
            q,
            Message {
                id: 0x1234,
                response: false,
                qname: "example.com".into(),
                qtype: 1,
                rcode: 0,
                answers: 0,
            }
        );
        // An answer: the question, then one A record whose name points at it (offset 12).
        let mut body = QUESTION.to_vec();
        body.extend_from_slice(b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x0a\x00\x00\x01");
        let a = parse(
            &message(0x1234, 0x8180, [1, 1, 0, 0], &body),
            Transport::Udp,
        )
        .unwrap();
        assert!(a.response);
        assert_eq!(
            (a.rcode, a.answers, a.qname.as_str()),
            (0, 1, "example.com")
        );
        let nx = parse(&message(7, 0x8183, [1, 0, 0, 0], QUESTION), Transport::Udp).unwrap();
        assert_eq!(rcode_name(nx.rcode), "NXDOMAIN");
        // A code without a name keeps its number.
        let odd = parse(&message(7, 0x818f, [1, 0, 0, 0], QUESTION), Transport::Udp).unwrap();
        assert_eq!(rcode_name(odd.rcode), "15");
    }

    #[test]
    fn over_tcp_the_length_comes_first() {
        let m = message(9, 0x0100, [1, 0, 0, 0], QUESTION);
        let mut seg = (m.len() as u16).to_be_bytes().to_vec();
        seg.extend_from_slice(&m);
        assert_eq!(parse(&seg, Transport::Tcp).unwrap().id, 9);
        assert_eq!(
            parse(&seg[..seg.len() - 3], Transport::Tcp),
            Err(DnsError::Short {
                have: m.len() - 3,
                want: m.len()
            })
        );
        assert!(matches!(
            parse(&seg[..1], Transport::Tcp),
            Err(DnsError::Short { .. })
        ));
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        // Truncated header, truncated question.
        assert!(parse(&[0, 1, 2], Transport::Udp).is_err());
        assert!(
            parse(
                &message(1, 0x100, [1, 0, 0, 0], &QUESTION[..6]),
                Transport::Udp
            )
            .is_err()
        );
        // A compression pointer to itself.
        let looped = message(1, 0x100, [1, 0, 0, 0], b"\xc0\x0c\x00\x01\x00\x01");
        assert!(parse(&looped, Transport::Udp).is_err());
        // A label longer than 63 bytes.
        let mut long = vec![64u8];
        long.extend(std::iter::repeat_n(b'a', 64));
        long.extend_from_slice(b"\x00\x00\x01\x00\x01");
        assert!(parse(&message(1, 0x100, [1, 0, 0, 0], &long), Transport::Udp).is_err());
        // Counts that lie: five answers promised, none there; 65535 of each.
        assert!(parse(&message(1, 0x8180, [1, 5, 0, 0], QUESTION), Transport::Udp).is_err());
        let huge = message(1, 0x8180, [u16::MAX; 4], QUESTION);
        assert!(matches!(
            parse(&huge, Transport::Udp),
            Err(DnsError::Malformed(m)) if m.contains("section counts")
        ));
        // No question at all.
        assert_eq!(
            parse(&message(1, 0x8180, [0, 0, 0, 0], b""), Transport::Udp),
            Err(DnsError::NoQuestion)
        );
    }

    #[test]
    fn types_and_codes_by_name_or_number() {
        assert_eq!(qtype_name(28), "AAAA");
        assert_eq!(qtype_name(65), "HTTPS");
        assert_eq!(qtype_name(4242), "4242");
        assert_eq!(rcode_name(2), "SERVFAIL");
        assert_eq!(rcode_name(15), "15");
        // The numbers the parser gives agree with the table's.
        let aaaa = b"\x01a\x00\x00\x1c\x00\x01";
        let q = parse(&message(1, 0x100, [1, 0, 0, 0], aaaa), Transport::Udp).unwrap();
        assert_eq!(qtype_name(q.qtype), "AAAA");
        let any = b"\x01a\x00\x00\xff\x00\x01";
        let q = parse(&message(1, 0x100, [1, 0, 0, 0], any), Transport::Udp).unwrap();
        assert_eq!(qtype_name(q.qtype), "ANY");
    }
}
