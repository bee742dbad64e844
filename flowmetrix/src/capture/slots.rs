//! Which interface each counter slot belongs to, over time.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::Arc,
};

use flowmetrix_common::IF_SLOTS;

use crate::metrics::{DirectionStats, InterfaceStats};

/// Who the counts in each interface slot belong to: slots are given to interfaces as they
/// are attached and taken back when they go, and a slot's counters keep growing across
/// owners, so each owner's share is the growth since it got the slot. Counts that arrive
/// after an owner left (packets in flight) stay its own until the slot has a new one. So
/// the per-interface counters always add up to the slots' sums, the totals.
#[derive(Debug, Default)]
pub struct SlotBook {
    /// By slot (slot 0, for interfaces without one, is never given out).
    slots: Vec<Slot>,
    /// Slots given back, the longest free first.
    free: VecDeque<u32>,
    /// What interfaces that no longer hold a slot counted, by name.
    gone: BTreeMap<Arc<str>, [DirectionStats; 2]>,
}

#[derive(Debug, Clone, Default)]
struct Slot {
    owner: Option<Arc<str>>,
    /// The slot's counters when `owner` got it.
    base: [DirectionStats; 2],
}

/// Where the counts of interfaces without a slot (and of names past [`MAX_GONE`]) go.
pub const OTHER: &str = "other";
/// Interfaces gone whose counters are kept by name; more are added to [`OTHER`].
const MAX_GONE: usize = 1024;

impl SlotBook {
    /// Slots to read (0..used).
    pub fn used(&self) -> u32 {
        (self.slots.len() as u32).max(1)
    }

    /// A free slot, if any (not yet owned: [`start`](Self::start) it).
    pub fn take(&mut self) -> Option<u32> {
        if self.slots.is_empty() {
            self.slots.push(Slot::default()); // slot 0
        }
        if let Some(slot) = self.free.pop_front() {
            return Some(slot);
        }
        let next = self.slots.len() as u32;
        (next < IF_SLOTS).then(|| {
            self.slots.push(Slot::default());
            next
        })
    }

    /// Gives back a slot taken but not started.
    pub fn put_back(&mut self, slot: u32) {
        self.free.push_front(slot);
    }

    /// `name` owns `slot` from now on; `now` is the slot's counters at this moment.
    pub fn start(&mut self, slot: u32, name: Arc<str>, now: [DirectionStats; 2]) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        if let Some(old) = s.owner.take() {
            let share = since(now, s.base);
            let key = if self.gone.len() < MAX_GONE || self.gone.contains_key(&old) {
                old
            } else {
                OTHER.into()
            };
            let entry = self.gone.entry(key).or_default();
            for (e, d) in entry.iter_mut().zip(&share) {
                e.add(d);
            }
        }
        s.owner = Some(name);
        s.base = now;
    }

    /// The owner of `slot` has gone; the slot may be given out again.
    pub fn release(&mut self, slot: u32) {
        if slot != 0 && (slot as usize) < self.slots.len() && !self.free.contains(&slot) {
            self.free.push_back(slot);
        }
    }

    /// Per-interface counters from the slots' counters `raw` (by slot), sorted by name;
    /// [`OTHER`] only when it counted something.
    pub fn report(&self, raw: &[[DirectionStats; 2]]) -> Vec<InterfaceStats> {
        let mut by: BTreeMap<Arc<str>, [DirectionStats; 2]> = self.gone.clone();
        for (i, now) in raw.iter().enumerate() {
            let (name, share) = match self.slots.get(i).and_then(|s| s.owner.as_ref()) {
                Some(owner) => (Arc::clone(owner), since(*now, self.slots[i].base)),
                None => (OTHER.into(), *now),
            };
            let entry = by.entry(name).or_default();
            for (e, d) in entry.iter_mut().zip(&share) {
                e.add(d);
            }
        }
        by.into_iter()
            .filter(|(n, d)| &**n != OTHER || d.iter().any(|d| d.seen > 0 || d.sampled > 0))
            .map(|(interface, directions)| InterfaceStats {
                interface,
                directions,
            })
            .collect()
    }
}

fn since(now: [DirectionStats; 2], base: [DirectionStats; 2]) -> [DirectionStats; 2] {
    std::array::from_fn(|i| now[i].zip(base[i], u64::saturating_sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(seen: u64, sampled: u64, ring_drops: u64) -> DirectionStats {
        DirectionStats {
            seen,
            sampled,
            ring_drops,
            ..Default::default()
        }
    }

    fn sum(report: &[InterfaceStats]) -> [DirectionStats; 2] {
        let mut t = [DirectionStats::default(); 2];
        for i in report {
            for (t, d) in t.iter_mut().zip(&i.directions) {
                t.add(d);
            }
        }
        t
    }

    #[test]
    fn per_interface_counters_add_up_to_the_slots_across_owners() {
        let mut b = SlotBook::default();
        let zero = [DirectionStats::default(); 2];
        let s1 = b.take().unwrap();
        b.start(s1, "veth1".into(), zero);
        let s2 = b.take().unwrap();
        b.start(s2, "veth2".into(), zero);
        assert_eq!((s1, s2, b.used()), (1, 2, 3), "slot 0 is never given out");
        // veth1 counts 10 ingress, 4 egress; veth2 5; 1 packet on an interface without a slot.
        let mut raw = vec![
            [d(1, 1, 0), d(0, 0, 0)],
            [d(10, 2, 1), d(4, 1, 0)],
            [d(5, 1, 0), d(0, 0, 0)],
        ];
        // veth1 goes; 2 of its packets were in flight; veth3 gets its slot.
        b.release(s1);
        raw[1][0] = d(12, 3, 1);
        let s3 = b.take().unwrap();
        assert_eq!(s3, s1, "a slot given back is reused");
        b.start(s3, "veth3".into(), raw[1]);
        raw[1][0] = d(20, 4, 1);
        let r = b.report(&raw);
        let names: Vec<&str> = r.iter().map(|i| &*i.interface).collect();
        assert_eq!(names, ["other", "veth1", "veth2", "veth3"]);
        assert_eq!(r[1].directions, [d(12, 3, 1), d(4, 1, 0)]);
        assert_eq!(r[3].directions, [d(8, 1, 0), d(0, 0, 0)]);
        let mut total = [DirectionStats::default(); 2];
        for slot in &raw {
            for (t, x) in total.iter_mut().zip(slot) {
                t.add(x);
            }
        }
        assert_eq!(sum(&r), total);
        // A name that comes back adds to what it had.
        b.release(s3);
        let s = b.take().unwrap();
        b.start(s, "veth1".into(), raw[1]);
        raw[1][0] = d(21, 4, 1);
        let r = b.report(&raw);
        assert_eq!(
            r.iter()
                .find(|i| &*i.interface == "veth1")
                .unwrap()
                .directions[0],
            d(13, 3, 1)
        );
        assert_eq!(sum(&r), {
            let mut t = total;
            t[0].seen += 1;
            t
        });
    }

    #[test]
    fn slots_run_out_and_other_is_shown_only_when_it_counted() {
        let mut b = SlotBook::default();
        let taken: Vec<u32> = std::iter::from_fn(|| b.take()).collect();
        assert_eq!(taken.len() as u32, IF_SLOTS - 1);
        assert_eq!(b.take(), None);
        b.put_back(7);
        assert_eq!(b.take(), Some(7));
        let raw = vec![[DirectionStats::default(); 2]; b.used() as usize];
        assert!(
            b.report(&raw).is_empty(),
            "nothing started, nothing counted"
        );
    }
}
