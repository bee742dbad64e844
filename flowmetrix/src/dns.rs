//! DNS transactions: each query matched with its answer — same interface, the answer's
//! addresses and ports the query's reversed, same protocol and id — into one `dns_data` row
//! with the latency between the two packets' capture times. A query with no answer within
//! the timeout is a `TIMEOUT` row. The queries waiting are bounded: a query that finds the
//! table full is counted and gets no row, never a wrong one.
//!
//! Time is the packets' own (kernel capture times, or a file's): [`Transactions::expire`]
//! is given "now" by its caller, so a replayed file times out queries as the live capture
//! would. [`Stage`] takes the samples the source yields, finds the DNS messages on the DNS
//! ports and keeps the counters.

use std::{
    borrow::Cow,
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use crate::{
    attribution::Resolver,
    decode::{
        self, Link,
        dns::{Message, Transport, parse, qtype_name, rcode_name},
    },
    metrics::DnsCounters,
    offset,
    record::{Direction, DnsRecord, UnixNanos, Workload},
    sample::Sample,
    schema::ddl::DNS_TABLE,
};

/// The rcode of a query that got no answer in time.
pub const TIMEOUT: &str = "TIMEOUT";

/// The port DNS is served on.
pub const DNS_PORT: u16 = 53;

/// What the DNS transactions are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// How long a query waits for its answer (`--dns-timeout`).
    pub timeout: Duration,
    /// Queries waiting at most.
    pub max_pending: usize,
    /// The ports DNS is served on: 53 and `--dns-port`'s.
    pub ports: Vec<u16>,
    /// `--dns-table`.
    pub table: String,
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            max_pending: 65_536,
            ports: vec![DNS_PORT],
            table: DNS_TABLE.to_owned(),
        }
    }
}

/// 53 and the `extra` ports, each once.
pub fn dns_ports(extra: &[u16]) -> Vec<u16> {
    let mut ports = vec![DNS_PORT];
    for &p in extra {
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    ports
}

/// The DNS transactions of a run: samples in, rows out, counters kept.
pub struct Stage {
    transactions: Transactions,
    ports: Vec<u16>,
    host: Arc<str>,
    counters: Arc<DnsCounters>,
    malformed: u64,
    /// The newest capture time seen (a replay's clock).
    newest: UnixNanos,
    /// Which workload each row belongs to (live capture).
    attribution: Option<Resolver>,
}

impl Stage {
    pub fn new(settings: &DnsSettings, host: Arc<str>, counters: Arc<DnsCounters>) -> Self {
        Self {
            transactions: Transactions::new(settings.clone()),
            ports: settings.ports.clone(),
            host,
            counters,
            malformed: 0,
            newest: UnixNanos::default(),
            attribution: None,
        }
    }

    /// Rows get their workload from `resolver`.
    pub fn attribute_with(&mut self, resolver: Resolver) {
        self.attribution = Some(resolver);
    }

    /// One sample, seen on `interface`, after a VMware prefix of `prefix` bytes (None while
    /// `-auto-detect` learns it: not read, counted as malformed): its DNS message, if it
    /// carries one on a DNS port, is matched.
    pub fn sample(
        &mut self,
        s: &Sample<'_>,
        prefix: Option<usize>,
        interface: &Arc<str>,
        out: &mut Vec<DnsRecord>,
    ) {
        self.newest = self.newest.max(s.ts);
        let frame = match (s.link, prefix) {
            (Link::Ethernet, Some(p)) => match offset::strip(s.frame, s.wire_len, p) {
                Ok((f, _)) => f,
                Err(_) => return,
            },
            (Link::Ethernet, None) => return self.not_read(s),
            _ => s.frame,
        };
        let Some(seg) = decode::segment(s.link, frame) else {
            return;
        };
        if !self.ports.contains(&seg.src.1) && !self.ports.contains(&seg.dst.1) {
            return;
        }
        let transport = if seg.protocol == 6 {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        // A TCP segment without payload (the handshake, ACKs) carries no message.
        if seg.payload.is_empty() && transport == Transport::Tcp {
            return;
        }
        match parse(seg.payload, transport) {
            Ok(message) => {
                let made = out.len();
                self.transactions.message(
                    Captured {
                        ts: s.ts,
                        host: Arc::clone(&self.host),
                        interface: Arc::clone(interface),
                        direction: s.direction,
                        src: seg.src,
                        dst: seg.dst,
                        protocol: seg.protocol,
                        message,
                        cgroup_id: s.cgroup_id,
                    },
                    out,
                );
                self.attribute(&mut out[made..]);
            }
            Err(e) => {
                self.malformed += 1;
                tracing::debug!("DNS message not read: {e}");
            }
        }
        self.publish();
    }

    fn not_read(&mut self, s: &Sample<'_>) {
        // Whether it was DNS is unknown without the prefix: a frame that parses as one
        // without it is counted.
        if decode::segment(s.link, s.frame)
            .is_some_and(|seg| self.ports.contains(&seg.src.1) || self.ports.contains(&seg.dst.1))
        {
            self.malformed += 1;
            self.publish();
        }
    }

    /// Live: queries captured a timeout before the wall clock's `now` time out. A replay:
    /// before its newest packet's time.
    pub fn tick(&mut self, now: Option<UnixNanos>, out: &mut Vec<DnsRecord>) {
        let made = out.len();
        self.transactions.expire(now.unwrap_or(self.newest), out);
        self.attribute(&mut out[made..]);
        self.publish();
    }

    /// The end of the capture (at `now`, or the newest packet's time in a replay).
    pub fn finish(&mut self, now: Option<UnixNanos>, out: &mut Vec<DnsRecord>) {
        let made = out.len();
        self.transactions.finish(now.unwrap_or(self.newest), out);
        self.attribute(&mut out[made..]);
        self.publish();
    }

    fn attribute(&self, rows: &mut [DnsRecord]) {
        if let Some(a) = &self.attribution {
            let now = std::time::Instant::now();
            rows.iter_mut().for_each(|r| a.dns(r, now));
        }
    }

    fn publish(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let c = self.transactions.counts();
        let d = &self.counters;
        d.queries.store(c.queries, Relaxed);
        d.rows.store(c.rows, Relaxed);
        d.timeouts.store(c.timeouts, Relaxed);
        d.unmatched_answers.store(c.unmatched_answers, Relaxed);
        d.repeated_queries.store(c.repeated_queries, Relaxed);
        d.table_full.store(c.table_full, Relaxed);
        d.pending_at_end.store(c.pending_at_end, Relaxed);
        d.malformed.store(self.malformed, Relaxed);
    }
}

/// One DNS message as captured: where, when, between whom, and what it says.
#[derive(Debug, Clone)]
pub struct Captured {
    pub ts: UnixNanos,
    pub host: Arc<str>,
    pub interface: Arc<str>,
    pub direction: Direction,
    pub src: (IpAddr, u16),
    pub dst: (IpAddr, u16),
    /// 17 (UDP) or 6 (TCP).
    pub protocol: u8,
    pub message: Message,
    /// The cgroup id of the socket that sent it (TC egress; 0: none).
    pub cgroup_id: u64,
}

/// What the matcher did, since it was made.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DnsCounts {
    pub queries: u64,
    /// Rows made: answered and timed-out transactions.
    pub rows: u64,
    pub timeouts: u64,
    /// Answers to no query seen (asked before the capture started, or the query went by
    /// another way).
    pub unmatched_answers: u64,
    /// A query again with the same id before its answer (a retry): the first one's time is
    /// kept.
    pub repeated_queries: u64,
    /// Queries that found the table full: no row for them.
    pub table_full: u64,
    /// Queries still waiting at the end (younger than the timeout): no row for them.
    pub pending_at_end: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    interface: Arc<str>,
    client: (IpAddr, u16),
    server: (IpAddr, u16),
    protocol: u8,
    id: u16,
}

#[derive(Debug)]
struct Pending {
    ts: UnixNanos,
    host: Arc<str>,
    direction: Direction,
    qname: String,
    qtype: u16,
    cgroup_id: u64,
}

/// The queries waiting for their answers.
#[derive(Debug, Default)]
pub struct Transactions {
    settings: DnsSettings,
    pending: HashMap<Key, Pending>,
    /// Queries in the order they came, with their capture time, for the timeouts; an entry
    /// whose query was answered (or replaced) meanwhile is skipped.
    by_age: VecDeque<(UnixNanos, Key)>,
    counts: DnsCounts,
}

impl Transactions {
    pub fn new(settings: DnsSettings) -> Self {
        Self {
            settings,
            ..Default::default()
        }
    }

    pub fn counts(&self) -> DnsCounts {
        self.counts
    }

    /// Queries waiting now.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// A DNS message captured: a query waits, an answer makes its query's row.
    pub fn message(&mut self, m: Captured, out: &mut Vec<DnsRecord>) {
        if m.message.response {
            self.answer(m, out);
        } else {
            self.query(m);
        }
    }

    fn query(&mut self, m: Captured) {
        self.counts.queries += 1;
        let key = Key {
            interface: m.interface,
            client: m.src,
            server: m.dst,
            protocol: m.protocol,
            id: m.message.id,
        };
        if self.pending.contains_key(&key) {
            self.counts.repeated_queries += 1;
            return;
        }
        if self.pending.len() >= self.settings.max_pending {
            self.counts.table_full += 1;
            return;
        }
        // Entries of answered queries do not pile up behind an old unanswered one.
        if self.by_age.len() > 2 * self.pending.len() + 1024 {
            let pending = &self.pending;
            self.by_age
                .retain(|(ts, key)| pending.get(key).is_some_and(|p| p.ts == *ts));
        }
        self.by_age.push_back((m.ts, key.clone()));
        self.pending.insert(
            key,
            Pending {
                ts: m.ts,
                host: m.host,
                direction: m.direction,
                qname: m.message.qname,
                qtype: m.message.qtype,
                cgroup_id: m.cgroup_id,
            },
        );
    }

    fn answer(&mut self, m: Captured, out: &mut Vec<DnsRecord>) {
        let key = Key {
            interface: m.interface,
            client: m.dst,
            server: m.src,
            protocol: m.protocol,
            id: m.message.id,
        };
        let Some(query) = self.pending.remove(&key) else {
            self.counts.unmatched_answers += 1;
            return;
        };
        let latency_ns = m.ts.0.saturating_sub(query.ts.0).max(0);
        out.push(row(
            key,
            query,
            rcode_name(m.message.rcode),
            Some(u64::try_from(latency_ns / 1_000).unwrap_or(0)),
            Some(m.message.answers),
        ));
        self.counts.rows += 1;
    }

    /// Queries captured at least the timeout before `now` become `TIMEOUT` rows.
    pub fn expire(&mut self, now: UnixNanos, out: &mut Vec<DnsRecord>) {
        let timeout = i64::try_from(self.settings.timeout.as_nanos()).unwrap_or(i64::MAX);
        while let Some((ts, _)) = self.by_age.front() {
            if now.0.saturating_sub(ts.0) < timeout {
                break;
            }
            let Some((ts, key)) = self.by_age.pop_front() else {
                break;
            };
            // Still the query this entry was made for (not answered, not a later one).
            if self.pending.get(&key).is_some_and(|p| p.ts == ts)
                && let Some(query) = self.pending.remove(&key)
            {
                out.push(row(key, query, Cow::Borrowed(TIMEOUT), None, None));
                self.counts.rows += 1;
                self.counts.timeouts += 1;
            }
        }
    }

    /// The end of the capture at `now`: queries past the timeout become `TIMEOUT` rows, the
    /// younger ones are counted (`pending_at_end`), as their answer may still have come.
    pub fn finish(&mut self, now: UnixNanos, out: &mut Vec<DnsRecord>) {
        self.expire(now, out);
        self.counts.pending_at_end += self.pending.len() as u64;
        self.pending.clear();
        self.by_age.clear();
    }
}

fn row(
    key: Key,
    query: Pending,
    rcode: Cow<'static, str>,
    latency_us: Option<u64>,
    answers: Option<u16>,
) -> DnsRecord {
    DnsRecord {
        ts: query.ts,
        host: query.host,
        interface: key.interface,
        direction: query.direction,
        src_ip: key.client.0,
        src_port: key.client.1,
        dst_ip: key.server.0,
        dst_port: key.server.1,
        protocol: key.protocol,
        dns_id: key.id,
        dns_qname: query.qname,
        dns_qtype: qtype_name(query.qtype),
        dns_rcode: rcode,
        dns_latency_us: latency_us,
        dns_answers: answers,
        workload: Workload {
            cgroup_id: (query.cgroup_id != 0).then_some(query.cgroup_id),
            ..Workload::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    fn msg(id: u16, response: bool, rcode: u16, answers: u16) -> Message {
        Message {
            id,
            response,
            qname: "example.com".into(),
            qtype: 28,
            rcode,
            answers,
        }
    }

    fn client() -> (IpAddr, u16) {
        ("10.0.0.2".parse().unwrap(), 40_000)
    }

    fn server() -> (IpAddr, u16) {
        ("10.0.0.1".parse().unwrap(), 53)
    }

    fn query(at_ms: i64, id: u16) -> Captured {
        Captured {
            ts: UnixNanos(at_ms * MS),
            host: "h".into(),
            interface: "veth0".into(),
            direction: Direction::Egress,
            src: client(),
            dst: server(),
            protocol: 17,
            message: msg(id, false, 0, 0),
            cgroup_id: 0,
        }
    }

    fn answer(at_ms: i64, id: u16, rcode: u16, answers: u16) -> Captured {
        Captured {
            direction: Direction::Ingress,
            src: server(),
            dst: client(),
            message: msg(id, true, rcode, answers),
            ..query(at_ms, id)
        }
    }

    #[test]
    fn a_query_and_its_answer_make_one_row_with_the_latency() {
        let mut t = Transactions::new(DnsSettings::default());
        let mut out = Vec::new();
        t.message(query(100, 7), &mut out);
        t.message(answer(121, 7, 0, 2), &mut out);
        assert_eq!(
            out,
            [DnsRecord {
                ts: UnixNanos(100 * MS),
                host: "h".into(),
                interface: "veth0".into(),
                direction: Direction::Egress,
                src_ip: client().0,
                src_port: 40_000,
                dst_ip: server().0,
                dst_port: 53,
                protocol: 17,
                dns_id: 7,
                dns_qname: "example.com".into(),
                dns_qtype: "AAAA".into(),
                dns_rcode: "NOERROR".into(),
                dns_latency_us: Some(21_000),
                dns_answers: Some(2),
                workload: Workload::default(),
            }]
        );
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn answers_match_only_their_own_query() {
        let mut t = Transactions::new(DnsSettings::default());
        let mut out = Vec::new();
        t.message(query(0, 1), &mut out);
        t.message(query(1, 2), &mut out);
        // Another id, another interface, another protocol: not these queries' answers.
        t.message(answer(5, 3, 0, 0), &mut out);
        t.message(
            Captured {
                interface: "eth1".into(),
                ..answer(5, 1, 0, 0)
            },
            &mut out,
        );
        t.message(
            Captured {
                protocol: 6,
                ..answer(5, 1, 0, 0)
            },
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!(t.counts().unmatched_answers, 3);
        t.message(answer(30, 2, 3, 0), &mut out);
        t.message(answer(40, 1, 0, 1), &mut out);
        let got: Vec<_> = out
            .iter()
            .map(|r| (r.dns_id, r.dns_rcode.as_ref(), r.dns_latency_us))
            .collect();
        assert_eq!(
            got,
            [(2, "NXDOMAIN", Some(29_000)), (1, "NOERROR", Some(40_000))]
        );
    }

    #[test]
    fn an_unanswered_query_times_out_and_a_retry_keeps_the_first_time() {
        let mut t = Transactions::new(DnsSettings {
            max_pending: 16,
            ..DnsSettings::default()
        });
        let mut out = Vec::new();
        t.message(query(1_000, 9), &mut out);
        t.message(query(2_000, 9), &mut out); // the client's retry
        t.message(query(3_000, 10), &mut out);
        t.expire(UnixNanos(5_999 * MS), &mut out);
        assert!(out.is_empty(), "not yet");
        t.expire(UnixNanos(6_000 * MS), &mut out);
        assert_eq!(out.len(), 1);
        let r = &out[0];
        assert_eq!(
            (
                r.dns_id,
                r.ts,
                r.dns_rcode.as_ref(),
                r.dns_latency_us,
                r.dns_answers
            ),
            (9, UnixNanos(1_000 * MS), TIMEOUT, None, None)
        );
        // An answer after the timeout answers nothing.
        t.message(answer(6_500, 9, 0, 1), &mut out);
        assert_eq!(out.len(), 1);
        // The end: 10 is younger than the timeout, counted, no row.
        t.finish(UnixNanos(7_000 * MS), &mut out);
        assert_eq!(out.len(), 1);
        let c = t.counts();
        assert_eq!(
            (
                c.queries,
                c.rows,
                c.timeouts,
                c.repeated_queries,
                c.unmatched_answers,
                c.pending_at_end
            ),
            (3, 1, 1, 1, 1, 1)
        );
    }

    #[test]
    fn a_full_table_is_counted_and_makes_no_row() {
        let mut t = Transactions::new(DnsSettings {
            max_pending: 2,
            ..DnsSettings::default()
        });
        let mut out = Vec::new();
        for id in 0..4 {
            t.message(query(0, id), &mut out);
        }
        assert_eq!((t.pending(), t.counts().table_full), (2, 2));
        t.message(answer(1, 3, 0, 0), &mut out);
        assert!(out.is_empty(), "its query was not kept");
        t.message(answer(1, 0, 0, 0), &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn answered_queries_do_not_pile_up_in_the_timeout_order() {
        let mut t = Transactions::new(DnsSettings::default());
        let mut out = Vec::new();
        t.message(query(0, 0), &mut out); // never answered: holds the front
        for i in 1..5_000u16 {
            t.message(query(1, i), &mut out);
            t.message(answer(2, i, 0, 0), &mut out);
        }
        assert!(t.by_age.len() <= 1024 + 3, "{}", t.by_age.len());
        assert_eq!(out.len(), 4_999);
    }
}
