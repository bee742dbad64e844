//! TCP handshakes in the kernel (root tier): the programs run on handshake segments with
//! BPF_PROG_TEST_RUN; the states are read through [`flowmetrix::flows::HandshakeMap`], as
//! the collector reads them. A plain ACK looks its connection up only when its flow entry
//! awaits one (after a SYN) or is new: counted exactly in `HSSTATS.ack_lookups`.

use crate::common;

use common::xdp::{Loaded, Settings};
use flowmetrix::flows::HandshakeTotals;
use flowmetrix_common::{
    PROGRAM_NAME, TC_EGRESS_PROGRAM_NAME,
    flow_key::{FlowKey, MODE_FLOWS, parse},
};

fn tcp(src_port: u16, syn: bool, ack: bool, rst: bool) -> Vec<u8> {
    common::frames::write(|v| {
        let mut b = common::frames::eth()
            .ipv4(common::frames::IP4_B, common::frames::IP4_A, 64)
            .tcp(src_port, 80, 1, 1000);
        if syn {
            b = b.syn();
        }
        if ack {
            b = b.ack(1);
        }
        if rst {
            b = b.rst();
        }
        b.write(v, &[]).unwrap()
    })
}

fn load(program: &'static str, handshakes: bool, entries: u32) -> Loaded {
    Loaded::load(Settings {
        program,
        mode: MODE_FLOWS,
        handshakes,
        handshake_entries: entries,
        ..Default::default()
    })
}

fn totals(l: &mut Loaded) -> HandshakeTotals {
    l.flow_maps()
        .handshakes
        .as_ref()
        .expect("the handshake map")
        .totals()
        .expect("read HSSTATS")
}

/// The key the XDP program counts `frame` under (BPF_PROG_TEST_RUN runs on loopback).
fn key_of(frame: &[u8]) -> FlowKey {
    let mut k = FlowKey::ZERO;
    parse(frame, 0, &mut k).expect("keyed");
    k.ifindex = 1;
    k
}

#[test]
fn a_syn_then_its_ack_completes_and_other_acks_never_look_up() {
    common::require_root();
    let mut l = load(PROGRAM_NAME, true, 1024);
    // A connection whose SYN was never seen: its first ACK (a new entry) looks, no other.
    l.run(&tcp(40_000, false, true, false), 5);
    assert_eq!(
        totals(&mut l),
        HandshakeTotals {
            ack_lookups: 1,
            ..HandshakeTotals::default()
        }
    );
    // SYN, its retransmit, then three ACKs: the first completes (SYN → ACK, no socket
    // here), the others do not look.
    let syn = tcp(40_001, true, false, false);
    l.run(&syn, 1);
    l.run(&syn, 1);
    l.run(&tcp(40_001, false, true, false), 3);
    assert_eq!(
        totals(&mut l),
        HandshakeTotals {
            started: 1,
            completed: 1,
            full: 0,
            ack_lookups: 2,
        }
    );
    let conn = key_of(&syn);
    let now = flowmetrix::flows::handshakes::boot_now();
    let maps = l.flow_maps();
    let read = maps.handshakes.as_mut().unwrap().collect(now).unwrap();
    assert_eq!(read.len(), 1, "{read:?}");
    assert_eq!(read[0].0, conn);
    assert_eq!(read[0].1.syn_retransmits, 1);
    assert!(read[0].1.us.is_some_and(|us| us >= 1), "{read:?}");
    // Read and removed: nothing more.
    assert!(
        maps.handshakes
            .as_mut()
            .unwrap()
            .collect(now)
            .unwrap()
            .is_empty()
    );
    // The flow rows see the flags byte only, not the kernel's mark.
    let c = maps.collect().unwrap();
    for (k, v) in &c.flows {
        assert!(v.tcp_flags <= 0xff, "{k:?}: {v:?}");
    }
}

#[test]
fn an_rst_ends_an_attempt_and_its_retransmits_are_still_read() {
    common::require_root();
    let mut l = load(PROGRAM_NAME, true, 1024);
    let syn = tcp(40_002, true, false, false);
    l.run(&syn, 3);
    l.run(&tcp(40_002, false, true, true), 1);
    let now = flowmetrix::flows::handshakes::boot_now();
    // Read one state at a time here (the other tests read with batch calls).
    let h = l.flow_maps().handshakes.as_mut().unwrap();
    h.without_batch_calls();
    let read = h.collect(now).unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!((read[0].1.us, read[0].1.syn_retransmits), (None, 2));
    assert!(h.collect(now).unwrap().is_empty(), "removed");
}

#[test]
fn a_full_state_map_is_counted_and_switched_off_tracks_nothing() {
    common::require_root();
    let mut l = load(PROGRAM_NAME, true, 1);
    l.run(&tcp(40_003, true, false, false), 1);
    l.run(&tcp(40_004, true, false, false), 2);
    let t = totals(&mut l);
    assert_eq!((t.started, t.full), (1, 2), "{t:?}");
    // The second connection's ACK finds no state: nothing completes.
    l.run(&tcp(40_004, false, true, false), 1);
    assert_eq!(totals(&mut l).completed, 0);

    // Off (`--tcp-health off`): the programs never touch the state map.
    for program in [PROGRAM_NAME, TC_EGRESS_PROGRAM_NAME] {
        let mut l = load(program, false, 1);
        l.run(&tcp(40_005, true, false, false), 2);
        l.run(&tcp(40_005, false, true, false), 2);
        assert_eq!(totals(&mut l), HandshakeTotals::default());
    }
}

/// TC egress with a socket (the test run's own): the SYN leaves the client's host, so the
/// attempt is timed SYN out → SYN-ACK in, and the ACK going out after it completes nothing.
#[test]
fn a_syn_leaving_with_a_socket_is_the_clients() {
    common::require_root();
    let mut l = load(TC_EGRESS_PROGRAM_NAME, true, 1024);
    let syn = tcp(40_006, true, false, false);
    l.run(&syn, 1);
    l.run(&tcp(40_006, false, true, false), 1);
    assert_eq!(
        totals(&mut l).completed,
        0,
        "the client's ACK completes nothing"
    );
    let now = flowmetrix::flows::handshakes::boot_now();
    let read = l
        .flow_maps()
        .handshakes
        .as_mut()
        .unwrap()
        .collect(now)
        .unwrap();
    assert!(read.is_empty(), "open, no retransmit: nothing to say yet");
}
