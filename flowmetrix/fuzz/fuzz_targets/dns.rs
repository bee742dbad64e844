//! Any bytes as a DNS message over UDP and over TCP, and what parses through the
//! transaction matcher: never a panic; a name comes out lower case, without the trailing
//! dot, and no longer than DNS allows.
#![no_main]

use flowmetrix::{
    decode::dns::{Transport, parse, qtype_name, rcode_name},
    dns::{Captured, DnsSettings, Transactions},
    record::{Direction, UnixNanos},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut matcher = Transactions::new(DnsSettings::default());
    let mut out = Vec::new();
    for transport in [Transport::Udp, Transport::Tcp] {
        let Ok(message) = parse(data, transport) else {
            continue;
        };
        assert!(message.qname.len() <= 255, "{message:?}");
        assert!(!message.qname.ends_with('.'), "{message:?}");
        assert!(!message.qname.bytes().any(|b| b.is_ascii_uppercase()), "{message:?}");
        let _ = (qtype_name(message.qtype), rcode_name(message.rcode));
        let addr = "10.0.0.1".parse().unwrap();
        let captured = Captured {
            ts: UnixNanos(1),
            host: "h".into(),
            interface: "i".into(),
            direction: Direction::Ingress,
            src: (addr, 53),
            dst: (addr, 53),
            protocol: 17,
            message,
            cgroup_id: 0,
        };
        // The same message as query and as answer: at most one row.
        let mut query = captured.clone();
        query.message.response = false;
        matcher.message(query, &mut out);
        let mut answer = captured;
        answer.message.response = true;
        matcher.message(answer, &mut out);
    }
    matcher.finish(UnixNanos(i64::MAX), &mut out);
    assert!(out.len() <= 2, "{out:?}");
});
