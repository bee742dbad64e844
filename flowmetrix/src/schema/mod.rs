//! The tables: each table's columns, declared once ([`columns`]), and what is derived from
//! them — the row insert ([`table`]), the Arrow batch of the bulk path ([`arrow`]), the JSON
//! line ([`json`]) and the DDL text ([`ddl`]). Knows nothing of connections, retries or the
//! spool: the sinks use it.

pub mod arrow;
pub mod columns;
pub mod ddl;
mod json;
pub mod table;

pub use columns::{Column, Datum, Def, FLOW_SCHEMA, SCHEMA};
pub use table::{Table, column_schemas, encode, encode_row};
