//! bpf(2) called directly, for the map calls aya does not make (batch reads and deletes): the
//! one wrapper the stage's map readers share, and [`BatchMap`], the one reader of a whole
//! hash map they all use — a few batch calls a collection (`BPF_MAP_LOOKUP_BATCH`,
//! `BPF_MAP_LOOKUP_AND_DELETE_BATCH`, `BPF_MAP_DELETE_BATCH`, Linux 5.6+), or, where the
//! kernel refuses them, one key at a time (get-next-key, lookup, delete).

use std::{
    io,
    marker::PhantomData,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{
    Pod,
    maps::{Map, MapData, MapError},
};

/// The kernel's internal ENOTSUPP, which bpf(2) may return for unsupported map ops.
pub const ENOTSUPP: i32 = 524;

/// `union bpf_attr`, as 8-byte words (zero where a command does not look).
pub type Attr = [u64; 16];

/// bpf(2) with command `cmd`.
pub fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<()> {
    // SAFETY: `attr` is a zeroed bpf_attr laid out for `cmd`, whose pointers point at
    // buffers that live across the call, sized as the map's keys and values.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            size_of::<Attr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_LOOKUP_AND_DELETE_BATCH: libc::c_long = 25;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// Largest batch buffer (entries): far more than a hash bucket ever holds (the kernel
/// sizes the bucket array to the map, so buckets hold one or two entries).
const BATCH_MAX: usize = 1 << 16;

/// Entries a batch call asks for at first, for maps of at most some ten thousand entries
/// (the buffers double when a hash bucket holds more; the flow maps start larger).
pub const FIRST_BATCH: usize = 1024;

/// Which batch read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// `BPF_MAP_LOOKUP_BATCH`: the entries stay.
    Lookup,
    /// `BPF_MAP_LOOKUP_AND_DELETE_BATCH`: every entry read is deleted.
    LookupAndDelete,
}

impl Batch {
    pub fn name(self) -> &'static str {
        match self {
            Self::Lookup => "BPF_MAP_LOOKUP_BATCH",
            Self::LookupAndDelete => "BPF_MAP_LOOKUP_AND_DELETE_BATCH",
        }
    }

    fn cmd(self) -> libc::c_long {
        match self {
            Self::Lookup => BPF_MAP_LOOKUP_BATCH,
            Self::LookupAndDelete => BPF_MAP_LOOKUP_AND_DELETE_BATCH,
        }
    }

    /// Whether what a refused call leaves unread may be read one key at a time. Always when
    /// nothing was read yet; after a part, only when that part was deleted: a read that
    /// keeps entries would give that part twice.
    pub fn falls_back(self, read: usize) -> bool {
        read == 0 || self == Self::LookupAndDelete
    }
}

/// A map call that failed.
#[derive(Debug, thiserror::Error)]
#[error("{call} failed")]
pub struct CallError {
    pub call: &'static str,
    #[source]
    pub source: io::Error,
}

/// What one batch call did.
#[derive(Debug)]
pub enum BatchStep {
    /// `count` entries read (and deleted); go on from `next`.
    More {
        count: usize,
        next: u32,
    },
    /// `count` entries read; the map has no more.
    Done {
        count: usize,
    },
    /// The buffers are too small for the next hash bucket (ENOSPC, nothing read).
    TooSmall,
    /// The kernel does not take batch calls on this map (EINVAL, ENOTSUPP, …).
    Unsupported,
    Failed(io::Error),
}

/// Drives batch reads (`call(from, keys, values)`, `from`: None for the first) of `batch`
/// until the map has no more, `first` entries a call at first, doubled when a hash bucket
/// holds more; gives false when the kernel refuses them and what is left may be read one
/// key at a time ([`Batch::falls_back`]; what was read is in `out`).
pub fn batches<K: Pod, V: Pod>(
    batch: Batch,
    first: usize,
    mut call: impl FnMut(Option<u32>, &mut [K], &mut [V]) -> BatchStep,
    out: &mut Vec<(K, V)>,
) -> Result<bool, CallError> {
    let fail = |source| CallError {
        call: batch.name(),
        source,
    };
    let mut size = first.clamp(1, BATCH_MAX);
    let mut keys = vec![zeroed::<K>(); size];
    let mut values = vec![zeroed::<V>(); size];
    let (mut from, mut read) = (None, 0);
    loop {
        match call(from, &mut keys, &mut values) {
            BatchStep::More { count, next } => {
                read += take(&keys, &values, count, out);
                from = Some(next);
            }
            BatchStep::Done { count } => {
                take(&keys, &values, count, out);
                return Ok(true);
            }
            BatchStep::TooSmall if size < BATCH_MAX => {
                size *= 2;
                keys.resize(size, zeroed());
                values.resize(size, zeroed());
            }
            BatchStep::TooSmall => return Err(fail(io::Error::from_raw_os_error(libc::ENOSPC))),
            BatchStep::Unsupported if batch.falls_back(read) => return Ok(false),
            BatchStep::Unsupported => {
                return Err(fail(io::Error::other(
                    "refused after a part of the map was read",
                )));
            }
            BatchStep::Failed(source) => return Err(fail(source)),
        }
    }
}

/// Puts the first `count` entries a batch call read (at most the buffers' size) in `out`;
/// how many.
fn take<K: Pod, V: Pod>(keys: &[K], values: &[V], count: usize, out: &mut Vec<(K, V)>) -> usize {
    let count = count.min(keys.len()).min(values.len());
    out.extend(
        keys[..count]
            .iter()
            .copied()
            .zip(values[..count].iter().copied()),
    );
    count
}

/// Drives batch deletes of `keys` (`call(rest)`: how many of `rest` it deleted, and how it
/// ended), skipping a key already gone; gives false when the kernel refuses them before
/// deleting any (the keys are then to be deleted one at a time).
pub fn batch_deletes<K>(
    keys: &[K],
    mut call: impl FnMut(&[K]) -> (usize, io::Result<()>),
) -> Result<bool, CallError> {
    let mut rest = keys;
    while !rest.is_empty() {
        let (done, rc) = call(rest);
        let done = done.min(rest.len());
        match rc {
            Ok(()) => return Ok(true),
            // Stopped at a key not there: skip it, go on after it.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                rest = &rest[(done + 1).min(rest.len())..];
            }
            Err(e) if done == 0 && rest.len() == keys.len() && refused(&e) => return Ok(false),
            Err(source) => {
                return Err(CallError {
                    call: "BPF_MAP_DELETE_BATCH",
                    source,
                });
            }
        }
    }
    Ok(true)
}

/// Whether a batch call's error says the kernel does not take batch calls on this map.
fn refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOTSUP | ENOTSUPP | libc::ENOSYS)
    )
}

/// A zeroed `T`.
fn zeroed<T: Pod>() -> T {
    // SAFETY: a `Pod` is plain old data: every bit pattern, all zeros too, is one.
    unsafe { std::mem::zeroed() }
}

/// A kernel hash map of `K` → `V` read whole: by batch calls while the kernel takes them
/// (until it refuses, for good), else one key at a time.
pub struct BatchMap<K, V> {
    map: MapData,
    /// Entries a batch call asks for at first.
    first: usize,
    /// Whether the kernel takes batch calls on the map (until it refuses).
    batch: bool,
    /// Whether the map's keys and values are `K` and `V`'s sizes (another build's object
    /// may differ: it is then refused at the first read, never read into a wrong buffer).
    sized: Result<(), String>,
    _entries: PhantomData<fn() -> (K, V)>,
}

impl<K: Pod, V: Pod> BatchMap<K, V> {
    /// `map` (a hash map), read `first` entries a batch call at first.
    pub fn new(map: Map, first: usize) -> Result<Self, MapError> {
        let map = match map {
            Map::HashMap(m) | Map::LruHashMap(m) => m,
            other => {
                return Err(MapError::InvalidName {
                    name: format!("{other:?} is not a hash map"),
                });
            }
        };
        let info = map.info()?;
        let (key, value) = (info.key_size() as usize, info.value_size() as usize);
        let sized = if (key, value) == (size_of::<K>(), size_of::<V>()) {
            Ok(())
        } else {
            Err(format!(
                "the map's entries are {key} + {value} bytes, read as {} + {}",
                size_of::<K>(),
                size_of::<V>()
            ))
        };
        Ok(Self {
            map,
            first,
            batch: true,
            sized,
            _entries: PhantomData,
        })
    }

    /// The map (its descriptor, its info).
    pub fn map(&self) -> &MapData {
        &self.map
    }

    /// Reads one key at a time from now on, as on a kernel that refuses batch calls (for
    /// tests of that path).
    pub fn without_batch_calls(&mut self) {
        self.batch = false;
    }

    fn fd(&self) -> i32 {
        self.map.fd().as_fd().as_raw_fd()
    }

    /// Reads and deletes every entry into `out`. With no program writing the map meanwhile,
    /// each entry is read once and none is lost.
    pub fn read_and_delete(&mut self, out: &mut Vec<(K, V)>) -> Result<(), CallError> {
        self.read_with(Batch::LookupAndDelete, out)
    }

    /// Reads every entry into `out`; they stay.
    pub fn read(&mut self, out: &mut Vec<(K, V)>) -> Result<(), CallError> {
        self.read_with(Batch::Lookup, out)
    }

    fn read_with(&mut self, batch: Batch, out: &mut Vec<(K, V)>) -> Result<(), CallError> {
        self.check(batch.name())?;
        let fd = self.fd();
        if self.batch {
            let call =
                |from, keys: &mut [K], values: &mut [V]| sys::batch(fd, batch, from, keys, values);
            if batches(batch, self.first, call, out)? {
                return Ok(());
            }
            tracing::debug!(
                "{} refused: reading the map one key at a time",
                batch.name()
            );
            self.batch = false;
        }
        one_by_one(fd, batch == Batch::LookupAndDelete, out)
    }

    /// Deletes `keys` (a key already gone is skipped).
    pub fn delete(&mut self, keys: &[K]) -> Result<(), CallError> {
        self.check("BPF_MAP_DELETE_BATCH")?;
        let fd = self.fd();
        if self.batch {
            if batch_deletes(keys, |rest| sys::delete_batch(fd, rest))? {
                return Ok(());
            }
            tracing::debug!("BPF_MAP_DELETE_BATCH refused: deleting one key at a time");
            self.batch = false;
        }
        for key in keys {
            sys::delete(fd, key).map_err(|source| CallError {
                call: "BPF_MAP_DELETE_ELEM",
                source,
            })?;
        }
        Ok(())
    }

    fn check(&self, call: &'static str) -> Result<(), CallError> {
        self.sized.clone().map_err(|e| CallError {
            call,
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })
    }
}

/// Reads every entry with get-next-key and lookup (and, with `delete`, deletes it once the
/// next key is known: no program writes the map meanwhile, so the walk misses nothing, and
/// it stays linear: asking for the first key again would rescan the buckets).
fn one_by_one<K: Pod, V: Pod>(
    fd: i32,
    delete: bool,
    out: &mut Vec<(K, V)>,
) -> Result<(), CallError> {
    let fail = |call| move |source| CallError { call, source };
    let mut at = sys::next_key::<K>(fd, None).map_err(fail("BPF_MAP_GET_NEXT_KEY"))?;
    while let Some(key) = at {
        if let Some(value) = sys::lookup(fd, &key).map_err(fail("BPF_MAP_LOOKUP_ELEM"))? {
            out.push((key, value));
        }
        at = sys::next_key(fd, Some(&key)).map_err(fail("BPF_MAP_GET_NEXT_KEY"))?;
        if delete {
            sys::delete(fd, &key).map_err(fail("BPF_MAP_DELETE_ELEM"))?;
        }
    }
    Ok(())
}

/// The calls on a raw map fd, keys and values sized as the map's (checked by [`BatchMap`]).
mod sys {
    use std::io;

    use aya::Pod;

    use super::{Attr, Batch, BatchStep, ENOTSUPP, bpf, zeroed};

    /// One batch read (attr.batch: in_batch, out_batch, keys, values, count | map_fd,
    /// elem_flags, flags).
    pub fn batch<K: Pod, V: Pod>(
        fd: i32,
        batch: Batch,
        from: Option<u32>,
        keys: &mut [K],
        values: &mut [V],
    ) -> BatchStep {
        let n = keys.len().min(values.len());
        let mut in_batch = from.unwrap_or(0);
        let mut out_batch = 0u32;
        let mut attr: Attr = [0; 16];
        attr[0] = if from.is_some() {
            (&raw mut in_batch) as u64
        } else {
            0
        };
        attr[1] = (&raw mut out_batch) as u64;
        attr[2] = keys.as_mut_ptr() as u64;
        attr[3] = values.as_mut_ptr() as u64;
        attr[4] = n as u64 | (u64::from(fd as u32) << 32);
        let rc = bpf(batch.cmd(), &mut attr);
        let count = (attr[4] & 0xffff_ffff) as usize;
        match rc {
            Ok(()) => BatchStep::More {
                count,
                next: out_batch,
            },
            Err(e) => match e.raw_os_error() {
                Some(libc::ENOENT) => BatchStep::Done { count },
                Some(libc::ENOSPC) if count == 0 => BatchStep::TooSmall,
                Some(libc::EINVAL | libc::ENOTSUP | ENOTSUPP | libc::ENOSYS) if count == 0 => {
                    BatchStep::Unsupported
                }
                _ => BatchStep::Failed(e),
            },
        }
    }

    /// One BPF_MAP_DELETE_BATCH call on `keys`: how many it deleted, and how it ended.
    pub fn delete_batch<K: Pod>(fd: i32, keys: &[K]) -> (usize, io::Result<()>) {
        let mut attr: Attr = [0; 16];
        attr[2] = keys.as_ptr() as u64;
        attr[4] = keys.len() as u64 | (u64::from(fd as u32) << 32);
        let rc = bpf(super::BPF_MAP_DELETE_BATCH, &mut attr);
        ((attr[4] & 0xffff_ffff) as usize, rc)
    }

    /// attr for the one-key calls: map_fd | key | value or next_key | flags.
    fn elem(fd: i32, key: u64, value: u64) -> Attr {
        let mut attr: Attr = [0; 16];
        attr[0] = u64::from(fd as u32);
        attr[1] = key;
        attr[2] = value;
        attr
    }

    /// The key after `key` (None: the first key); None at the end.
    pub fn next_key<K: Pod>(fd: i32, key: Option<&K>) -> io::Result<Option<K>> {
        let mut next = zeroed::<K>();
        let key = key.map_or(0, |k| (&raw const *k) as u64);
        let mut attr = elem(fd, key, (&raw mut next) as u64);
        match bpf(super::BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(()) => Ok(Some(next)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn lookup<K: Pod, V: Pod>(fd: i32, key: &K) -> io::Result<Option<V>> {
        let mut value = zeroed::<V>();
        let mut attr = elem(fd, (&raw const *key) as u64, (&raw mut value) as u64);
        match bpf(super::BPF_MAP_LOOKUP_ELEM, &mut attr) {
            Ok(()) => Ok(Some(value)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes `key` (gone already is as good as deleted).
    pub fn delete<K: Pod>(fd: i32, key: &K) -> io::Result<()> {
        let mut attr = elem(fd, (&raw const *key) as u64, 0);
        match bpf(super::BPF_MAP_DELETE_ELEM, &mut attr) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use flowmetrix_common::flow_key::{FlowKey, FlowValue};

    use super::*;

    /// Entries the flow maps' reader asks for at first.
    const BATCH: usize = 4096;

    /// A hash map as the batch calls see it: buckets, each read whole or not at all.
    struct FakeMap {
        buckets: Vec<Vec<u32>>,
        calls: usize,
    }

    impl FakeMap {
        fn call(
            &mut self,
            from: Option<u32>,
            keys: &mut [FlowKey],
            values: &mut [FlowValue],
        ) -> BatchStep {
            self.calls += 1;
            let mut b = from.unwrap_or(0) as usize;
            let mut n = 0;
            while b < self.buckets.len() {
                let bucket = &self.buckets[b];
                if bucket.len() > keys.len() - n {
                    if n == 0 {
                        return BatchStep::TooSmall;
                    }
                    return BatchStep::More {
                        count: n,
                        next: b as u32,
                    };
                }
                for &k in bucket {
                    keys[n] = FlowKey {
                        ifindex: k,
                        ..FlowKey::ZERO
                    };
                    values[n] = FlowValue {
                        packets: u64::from(k),
                        ..Default::default()
                    };
                    n += 1;
                }
                self.buckets[b].clear();
                b += 1;
            }
            BatchStep::Done { count: n }
        }
    }

    #[test]
    fn batches_read_every_bucket_once_and_grow_for_a_big_bucket() {
        // 10 000 entries over 5 000 buckets, one bucket bigger than the first buffer.
        let mut buckets: Vec<Vec<u32>> = (0..5_000u32).map(|b| vec![2 * b, 2 * b + 1]).collect();
        buckets[1234] = (100_000..100_000 + BATCH as u32 + 10).collect();
        let want: usize = buckets.iter().map(Vec::len).sum();
        let mut map = FakeMap { buckets, calls: 0 };
        let mut out = Vec::new();
        assert!(
            batches(
                Batch::LookupAndDelete,
                BATCH,
                |f, k, v| map.call(f, k, v),
                &mut out
            )
            .unwrap()
        );
        assert_eq!(out.len(), want);
        let mut seen: Vec<u32> = out.iter().map(|(k, _)| k.ifindex).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), want, "each entry once");
        assert!(out.iter().all(|(k, v)| u64::from(k.ifindex) == v.packets));
        assert!(map.buckets.iter().all(Vec::is_empty), "all deleted");
        assert!(map.calls >= 4);
    }

    #[test]
    fn a_refused_batch_call_falls_back_and_an_error_is_one() {
        let d = Batch::LookupAndDelete;
        let mut out: Vec<(FlowKey, FlowValue)> = Vec::new();
        assert!(!batches(d, BATCH, |_, _, _| BatchStep::Unsupported, &mut out).unwrap());
        let err = batches(
            d,
            BATCH,
            |_, _, _| BatchStep::Failed(io::Error::from_raw_os_error(libc::EFAULT)),
            &mut out,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("BPF_MAP_LOOKUP_AND_DELETE_BATCH"),
            "{err}"
        );
        assert_eq!(err.source.raw_os_error(), Some(libc::EFAULT));
        let err = batches(d, BATCH, |_, _, _| BatchStep::TooSmall, &mut out).unwrap_err();
        assert_eq!(err.source.raw_os_error(), Some(libc::ENOSPC));
        // An empty map: one call.
        let mut calls = 0;
        assert!(
            batches(
                d,
                BATCH,
                |_, _, _| {
                    calls += 1;
                    BatchStep::Done { count: 0 }
                },
                &mut out
            )
            .unwrap()
        );
        assert_eq!((calls, out.len()), (1, 0));
    }

    #[test]
    fn buffers_grow_from_the_first_size_to_the_largest_then_fail() {
        let mut sizes = Vec::new();
        let mut out: Vec<(u32, u64)> = Vec::new();
        let err = batches(
            Batch::Lookup,
            1024,
            |_, k: &mut [u32], v: &mut [u64]| {
                assert_eq!(k.len(), v.len());
                sizes.push(k.len());
                BatchStep::TooSmall
            },
            &mut out,
        )
        .unwrap_err();
        assert_eq!(sizes, [1024, 2048, 4096, 8192, 16_384, 32_768, 65_536]);
        assert_eq!(err.call, "BPF_MAP_LOOKUP_BATCH");
        // Grown once, the bigger buffer stays for the calls after.
        let mut sizes = Vec::new();
        let mut calls = 0;
        assert!(
            batches(
                Batch::Lookup,
                2,
                |from, k: &mut [u32], _: &mut [u64]| {
                    calls += 1;
                    sizes.push(k.len());
                    match (calls, from) {
                        (1, None) => BatchStep::TooSmall,
                        (2, None) => {
                            k[..3].copy_from_slice(&[1, 2, 3]);
                            BatchStep::More { count: 3, next: 7 }
                        }
                        (3, Some(7)) => {
                            k[0] = 4;
                            BatchStep::Done { count: 1 }
                        }
                        other => panic!("unexpected call {other:?}"),
                    }
                },
                &mut out,
            )
            .unwrap()
        );
        assert_eq!(sizes, [2, 4, 4]);
        assert_eq!(out.iter().map(|e| e.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
        // A count the kernel would never give beyond the buffer is cut to it.
        let mut out: Vec<(u32, u64)> = Vec::new();
        batches(
            Batch::Lookup,
            4,
            |_, _: &mut [u32], _: &mut [u64]| BatchStep::Done { count: 99 },
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn a_refusal_after_a_part_falls_back_only_where_that_part_was_deleted() {
        assert!(Batch::Lookup.falls_back(0));
        assert!(!Batch::Lookup.falls_back(1));
        assert!(Batch::LookupAndDelete.falls_back(0));
        assert!(Batch::LookupAndDelete.falls_back(5));
        let part_then_refused = |batch| {
            let mut calls = 0;
            let mut out: Vec<(u32, u64)> = Vec::new();
            let r = batches(
                batch,
                8,
                |_, k: &mut [u32], _: &mut [u64]| {
                    calls += 1;
                    if calls == 1 {
                        k[0] = 9;
                        BatchStep::More { count: 1, next: 1 }
                    } else {
                        BatchStep::Unsupported
                    }
                },
                &mut out,
            );
            assert_eq!(out.len(), 1, "what was read is kept");
            r
        };
        // Deleted: the rest one key at a time.
        assert!(!part_then_refused(Batch::LookupAndDelete).unwrap());
        // Kept: one key at a time would give it twice, so it is an error.
        let err = part_then_refused(Batch::Lookup).unwrap_err();
        assert_eq!(err.call, "BPF_MAP_LOOKUP_BATCH");
        // Refused at once: one key at a time, whatever the call.
        let mut out: Vec<(u32, u64)> = Vec::new();
        assert!(!batches(Batch::Lookup, 8, |_, _, _| BatchStep::Unsupported, &mut out).unwrap());
    }

    #[test]
    fn batch_deletes_skip_a_key_gone_and_fall_back_only_when_refused_at_once() {
        let keys = [1u32, 2, 3, 4, 5];
        // Key 3 is gone: the kernel deletes 1 and 2, stops at 3 with ENOENT.
        let mut calls: Vec<Vec<u32>> = Vec::new();
        assert!(
            batch_deletes(&keys, |rest| {
                calls.push(rest.to_vec());
                if rest[0] == 1 {
                    (2, Err(io::Error::from_raw_os_error(libc::ENOENT)))
                } else {
                    (rest.len(), Ok(()))
                }
            })
            .unwrap()
        );
        assert_eq!(calls, [vec![1, 2, 3, 4, 5], vec![4, 5]]);
        // The last key gone: done.
        assert!(
            batch_deletes(&keys, |rest| (
                rest.len() - 1,
                Err(io::Error::from_raw_os_error(libc::ENOENT))
            ))
            .unwrap()
        );
        // Refused before deleting any: one at a time.
        for errno in [libc::EINVAL, libc::ENOTSUP, ENOTSUPP, libc::ENOSYS] {
            assert!(
                !batch_deletes(&keys, |_| (0, Err(io::Error::from_raw_os_error(errno)))).unwrap()
            );
        }
        // Refused after some were deleted, or another error: an error.
        let mut n = 0;
        let err = batch_deletes(&keys, |_| {
            n += 1;
            if n == 1 {
                (0, Err(io::Error::from_raw_os_error(libc::ENOENT)))
            } else {
                (0, Err(io::Error::from_raw_os_error(libc::EINVAL)))
            }
        })
        .unwrap_err();
        assert_eq!(err.call, "BPF_MAP_DELETE_BATCH");
        let err = batch_deletes(&keys, |_| {
            (0, Err(io::Error::from_raw_os_error(libc::EFAULT)))
        })
        .unwrap_err();
        assert_eq!(err.source.raw_os_error(), Some(libc::EFAULT));
        // Nothing to delete: no call.
        assert!(batch_deletes::<u32>(&[], |_| unreachable!()).unwrap());
    }
}
