//! The spool's accounting: rows per table, and the counters each table's rows are counted
//! in. Every row handed to the spool counts as `spooled`; each is later `replayed`, counted
//! as `spool lost`, or still on disk at exit — for each table on its own.

use std::sync::{Arc, Mutex};

use crate::metrics::Counters;

/// Rows per table, by the table name their inserts give (`None`: a record whose table
/// could not be read, counted with the spool's own counters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowsPerTable(Vec<(Option<String>, u64)>);

impl RowsPerTable {
    pub fn of(table: Option<&str>, rows: u64) -> Self {
        let mut t = Self::default();
        t.add(table, rows);
        t
    }

    pub fn add(&mut self, table: Option<&str>, rows: u64) {
        if rows == 0 {
            return;
        }
        match self.0.iter_mut().find(|(t, _)| t.as_deref() == table) {
            Some((_, n)) => *n += rows,
            None => self.0.push((table.map(str::to_owned), rows)),
        }
    }

    /// The rows of `table`.
    pub fn get(&self, table: Option<&str>) -> u64 {
        self.0
            .iter()
            .find(|(t, _)| t.as_deref() == table)
            .map_or(0, |(_, n)| *n)
    }

    /// What `self` holds beyond `other`, table by table (never below zero).
    pub fn minus(&self, other: &Self) -> Self {
        let mut out = Self::default();
        for (t, n) in &self.0 {
            out.add(t.as_deref(), n.saturating_sub(other.get(t.as_deref())));
        }
        out
    }

    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Option<&str>, u64)> {
        self.0.iter().map(|(t, n)| (t.as_deref(), *n))
    }
}

/// The counters of the spool's rows: the spool's own, and those of each table counted apart
/// ([`TableCounters::add`]).
pub struct TableCounters {
    own: Arc<Counters>,
    tables: Mutex<Vec<(String, Arc<Counters>)>>,
}

impl TableCounters {
    pub fn new(own: Arc<Counters>) -> Self {
        Self {
            own,
            tables: Mutex::new(Vec::new()),
        }
    }

    /// The spool's own counters (the gauges, and the rows of every table not added).
    pub fn own(&self) -> &Counters {
        &self.own
    }

    /// Counts the rows of inserts for `table` in `counters` from now on.
    pub fn add(&self, table: &str, counters: Arc<Counters>) {
        self.tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((table.to_owned(), counters));
    }

    /// The counters of `table`'s rows.
    pub fn of(&self, table: Option<&str>) -> Arc<Counters> {
        let tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        table
            .and_then(|t| tables.iter().find(|(n, _)| n == t))
            .map_or_else(|| Arc::clone(&self.own), |(_, c)| Arc::clone(c))
    }

    /// Counts `rows` as lost, each against its table's counters.
    pub fn lose(&self, rows: &RowsPerTable) {
        for (table, n) in rows.iter() {
            Counters::add(&self.of(table).spool_lost, n);
        }
    }
}
