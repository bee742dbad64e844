//! The tag/field roles of an existing table's columns, learned from the server.
//!
//! A row insert declares each column's semantic type, and GreptimeDB's region checks it
//! against the table (`WriteRequest::check_schema` in `src/mito2/src/request.rs`, every
//! version): a column declared a field that the table has as a tag is refused with
//! `InvalidArguments` 1004 "…, reason: column src_ip has semantic type Tag, given:
//! FIELD(1)". An existing table is used as it is — e.g. one the Go original or an older
//! FlowMetrix made, with `src_ip` and `dst_port` as tags — so when the server answers so,
//! the column's role is learned here (logged once), and every insert into that table
//! declares it from then on. The refused request is sent again at once: nothing was
//! written, and it costs one round trip per such column per run. (The SELECT that would
//! read the table's columns cannot be answered over the gRPC call the collector has.)

use std::{collections::HashMap, sync::Mutex};

use greptimedb_ingester::api::v1::{RowInsertRequests, SemanticType};
use tracing::info;

/// Table → column → the role the table gives it.
#[derive(Debug, Default)]
pub struct Shapes(Mutex<HashMap<String, HashMap<String, SemanticType>>>);

/// `column x has semantic type Tag, given: FIELD(1)` → (x, Tag).
pub fn semantic_clash(message: &str) -> Option<(&str, SemanticType)> {
    let (head, rest) = message.split_once(" has semantic type ")?;
    let column = head.rsplit_once("column ")?.1;
    let role = rest.split([',', ' ']).next()?;
    let role = match role {
        "Tag" => SemanticType::Tag,
        "Field" => SemanticType::Field,
        "Timestamp" => SemanticType::Timestamp,
        _ => return None,
    };
    Some((column, role))
}

fn role_name(role: SemanticType) -> &'static str {
    match role {
        SemanticType::Tag => "a tag",
        SemanticType::Field => "a field",
        SemanticType::Timestamp => "the time index",
    }
}

impl Shapes {
    /// `request` with the learned roles, when any differs from what it declares.
    pub fn apply(&self, request: &RowInsertRequests) -> Option<RowInsertRequests> {
        let known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let differs = |table: &str, column: &str, declared: i32| {
            known
                .get(table)
                .and_then(|t| t.get(column))
                .is_some_and(|r| *r as i32 != declared)
        };
        let any = request.inserts.iter().any(|i| {
            i.rows.as_ref().is_some_and(|rows| {
                rows.schema
                    .iter()
                    .any(|c| differs(&i.table_name, &c.column_name, c.semantic_type))
            })
        });
        if !any {
            return None;
        }
        let mut out = request.clone();
        for insert in &mut out.inserts {
            let Some(table) = known.get(&insert.table_name) else {
                continue;
            };
            if let Some(rows) = insert.rows.as_mut() {
                for c in &mut rows.schema {
                    if let Some(role) = table.get(&c.column_name) {
                        c.semantic_type = *role as i32;
                    }
                }
            }
        }
        Some(out)
    }

    /// Learns from a refusal of `request`; true when it taught something new (then the
    /// request is worth sending again).
    pub fn learn(&self, request: &RowInsertRequests, message: &str) -> bool {
        let Some((column, role)) = semantic_clash(message) else {
            return false;
        };
        let mut known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut learned = false;
        for insert in &request.inserts {
            let declares = insert.rows.as_ref().is_some_and(|rows| {
                rows.schema
                    .iter()
                    .any(|c| c.column_name == column && c.semantic_type != role as i32)
            });
            if !declares {
                continue;
            }
            // Declared otherwise: worth sending again, fitted (also when another request
            // taught it meanwhile).
            learned = true;
            let table = known.entry(insert.table_name.clone()).or_default();
            if table.insert(column.to_owned(), role) != Some(role) {
                info!(
                    "table {} has column {column} as {} (an older FlowMetrix or the Go original created it): rows are written to fit it",
                    insert.table_name,
                    role_name(role)
                );
            }
        }
        learned
    }
}

#[cfg(test)]
mod tests {
    use greptimedb_ingester::api::v1::{ColumnSchema, RowInsertRequest, Rows};

    use super::*;

    fn request(cols: &[(&str, SemanticType)]) -> RowInsertRequests {
        RowInsertRequests {
            inserts: vec![RowInsertRequest {
                table_name: "packet_data".into(),
                rows: Some(Rows {
                    schema: cols
                        .iter()
                        .map(|(n, s)| ColumnSchema {
                            column_name: (*n).into(),
                            semantic_type: *s as i32,
                            ..Default::default()
                        })
                        .collect(),
                    rows: vec![],
                }),
            }],
        }
    }

    #[test]
    fn the_servers_refusal_names_the_column_and_its_role() {
        let msg = "Invalid request to region 4398046511104(1024, 0), reason: column src_ip has semantic type Tag, given: FIELD(1)";
        assert_eq!(semantic_clash(msg), Some(("src_ip", SemanticType::Tag)));
        assert_eq!(
            semantic_clash("reason: column dst_port has semantic type Field, given: TAG(0)"),
            Some(("dst_port", SemanticType::Field))
        );
        assert_eq!(
            semantic_clash("reason: column x expect type UInt16(UInt16Type), given: STRING(12)"),
            None
        );
    }

    #[test]
    fn a_learned_role_is_declared_from_then_on_and_learned_once() {
        use SemanticType::{Field, Tag};
        let shapes = Shapes::default();
        let req = request(&[("src_ip", Field), ("dst_ip", Field)]);
        assert!(shapes.apply(&req).is_none());
        let msg = "reason: column src_ip has semantic type Tag, given: FIELD(1)";
        assert!(shapes.learn(&req, msg));
        let fixed = shapes.apply(&req).unwrap();
        let schema = &fixed.inserts[0].rows.as_ref().unwrap().schema;
        assert_eq!(schema[0].semantic_type, Tag as i32);
        assert_eq!(schema[1].semantic_type, Field as i32);
        // The same answer to the fixed request teaches nothing: no endless resending.
        assert!(!shapes.learn(&fixed, msg));
        // A request sent before it was learned is fitted too (worth sending again).
        assert!(shapes.learn(&req, msg));
        // Another table is not touched.
        let mut other = req.clone();
        other.inserts[0].table_name = "flow_data".into();
        assert!(shapes.apply(&other).is_none());
    }
}
