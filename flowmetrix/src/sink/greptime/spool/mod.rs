//! A bounded on-disk spool of GreptimeDB inserts, for when GreptimeDB is away or slower
//! than the capture.
//!
//! Inserts are appended to segment files (`seg-<seq>.spool`) as checksummed records:
//! `magic u32 | payload length u32 | crc32 u32 | rows u32 | payload` (little-endian). The
//! payload is the database name (a length byte, then the name) and the protobuf
//! `RowInsertRequests` (which names the table) as the ingester sends it, so a record is
//! replayed where it was meant to go whatever the later run is told. Records of the first
//! format (`FMX1`, the insert alone) replay into the run's own database. What the spool
//! writes now is columnar (`FMX3`, [`columns`]): the database and table names, then the
//! batch's rows as one Arrow IPC stream, built straight from the records and appended with
//! one write; on replay it becomes the row insert of the same rows. Every format is read.
//!
//! Segments are replayed oldest first. Each record GreptimeDB acknowledged (or refused for
//! good) is marked done in place (its magic becomes `FMXD`), so a collector killed during a
//! replay resumes after the last acknowledged record; a segment is deleted once every record
//! is done. When the spool would exceed its size limit the oldest data is dropped first —
//! quarantined files, then the oldest segment, the one being replayed included — and its
//! rows counted as lost. A failed append (disk full) leaves the segment as it was. A torn or
//! corrupt record (power loss mid-write) is found by its checksum: the records before it are
//! replayed, the rest counted, the file quarantined (renamed `.bad`, counted in the limit,
//! at most [`MAX_BAD_FILES`] kept).
//!
//! The directory is locked (`flock` on `lock`, which holds the owner's pid): a second
//! collector on the same directory is refused with the pid of the one that has it.
//!
//! Accounting: every row handed to [`Spool::append`] counts as `spooled`; each is later
//! `replayed`, counted as `spool lost` (dropped for room, damaged, refused by GreptimeDB on
//! replay, not writable), or still on disk at exit ([`Spool::rows`]). This holds for each
//! table on its own: a segment knows its rows per table ([`RowsPerTable`]; for a segment an
//! earlier run left, from the table name at the start of each record's insert), so rows lost
//! in bulk — a segment dropped for room, a damaged one — are counted against the table they
//! belonged to ([`Spool::add_table`]). The on-disk format is unchanged by this.
//!
//! One concern a file, each used one way: [`format`] (records and segments on disk) with
//! [`columns`] (a columnar record's Arrow IPC, and its row insert),
//! [`lock`] (the directory lock), [`accounting`] (rows per table and their counters), the
//! [`store`] (appends, the size limit and eviction) on those, [`replay`] on the store, and
//! the spool's own [`thread`] on top; [`list`] reads a spool's contents for the user
//! (`flowmetrix spool`) and discards them.

pub mod accounting;
pub mod columns;
pub mod format;
pub mod list;
pub mod lock;
pub mod replay;
pub mod store;
pub mod thread;

pub use accounting::RowsPerTable;
pub use format::{Contents, Record, parse_segment};
pub use lock::SpoolError;
pub use replay::Replayed;
pub use store::{MAX_BAD_FILES, Segment, Spool};

#[cfg(test)]
mod tests;
