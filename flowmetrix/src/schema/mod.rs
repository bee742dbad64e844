//! The tables: each table's columns, and what is derived from them — the row insert
//! ([`table`]), the Arrow batch of the bulk path ([`arrow`]) and the DDL text ([`ddl`]).
//! Knows nothing of connections, retries or the spool: the sink uses it.

pub mod arrow;
pub mod columns;
pub mod ddl;
pub mod table;

pub use columns::{Column, FLOW_SCHEMA, SCHEMA, column_schemas, encode_row};
pub use table::{Table, encode};
