//! The DDL the test endpoint understands, read as GreptimeDB's parser reads it, for the
//! statements the collector sends: `CREATE TABLE [IF NOT EXISTS]`, `ALTER TABLE … ADD
//! COLUMN`, `CREATE FLOW [IF NOT EXISTS] … SINK TO … AS SELECT …`. An unquoted keyword as a
//! column name is the parser's syntax error (`application`, `bytes`, …).

use greptime_proto::v1::{ColumnDataType, SemanticType};

/// Words the real parser refuses as unquoted column names. GreptimeDB's `parse_column_def`
/// (`src/sql/src/parsers/create_parser.rs`, also used by `ALTER TABLE … ADD COLUMN`) refuses
/// an unquoted name found in sqlparser's `ALL_KEYWORDS` (any case). This is not that whole
/// list: it is every keyword among the column names flowmetrix uses — `application` and
/// `bytes` (seen on a live 1.0.0), `minute` (the rollups' window column) — plus a few common
/// ones. `tests/greptime_ddl/` pins a verdict for every name of both tables and the
/// rollup sinks, so a new column must be checked against sqlparser's list.
const KEYWORDS: &[&str] = &[
    "application",
    "bytes",
    "index",
    "interval",
    "metrics",
    "minute",
    "time",
    "timestamp",
];

/// What a syntax error says (GreptimeDB 2000, after "Invalid SQL syntax: sql parser error: ").
pub type Syntax = String;

#[derive(Debug, Clone, PartialEq)]
pub struct CreateTable {
    pub name: String,
    pub if_not_exists: bool,
    /// (name, type, semantic type), in order.
    pub columns: Vec<(String, i32, i32)>,
    pub append_mode: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreateFlow {
    pub name: String,
    pub if_not_exists: bool,
    pub sink: String,
    pub source: String,
    /// Columns of the source the query names.
    pub columns: Vec<String>,
    /// (name, is an aggregate, named by AS) of the SELECT list, and the group-by names.
    pub outputs: Vec<(String, bool, bool)>,
    pub group_by: Vec<String>,
}

fn strip_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let s = s.trim_start();
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// An identifier at the start of `s`: `"x"` (quotes doubled inside) or a bare word; the rest.
fn ident(s: &str) -> Option<(String, bool, &str)> {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if chars.peek().map(|(_, d)| *d) == Some('"') {
                    chars.next();
                    out.push('"');
                } else {
                    return Some((out, true, &rest[i + 1..]));
                }
            } else {
                out.push(c);
            }
        }
        return None;
    }
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (end > 0).then(|| (s[..end].to_owned(), false, &s[end..]))
}

/// Splits at commas outside parentheses and quotes.
fn split_top(s: &str) -> Vec<&str> {
    let (mut depth, mut quote, mut start, mut out) = (0i32, None, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// The text inside the parentheses that open at the start of `s`, and what follows.
fn parens(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start().strip_prefix('(')?;
    let (mut depth, mut quote) = (1i32, None);
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => {
                depth -= 1;
                if depth == 0 {
                    return Some((&s[..i], &s[i + 1..]));
                }
            }
            _ => {}
        }
    }
    None
}

fn sql_type(words: &str) -> Option<ColumnDataType> {
    use ColumnDataType as T;
    let w = words
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase();
    Some(match w.as_str() {
        "TIMESTAMP(9)" => T::TimestampNanosecond,
        "TIMESTAMP(3)" | "TIMESTAMP" => T::TimestampMillisecond,
        "TINYINT UNSIGNED" => T::Uint8,
        "SMALLINT UNSIGNED" => T::Uint16,
        "INT UNSIGNED" => T::Uint32,
        "BIGINT UNSIGNED" => T::Uint64,
        "BIGINT" => T::Int64,
        "STRING" => T::String,
        "DOUBLE" => T::Float64,
        _ => return None,
    })
}

fn column_name(s: &str) -> Result<(String, &str), Syntax> {
    let (name, quoted, rest) =
        ident(s).ok_or_else(|| format!("Expected: identifier, found: {s}"))?;
    if !quoted && KEYWORDS.contains(&name.to_ascii_lowercase().as_str()) {
        // The name as written, like the server's message.
        return Err(format!(
            "Cannot use keyword '{name}' as column name. Hint: add quotes to the name."
        ));
    }
    Ok((name, rest))
}

/// A list of column references (TIME INDEX, PRIMARY KEY, GROUP BY): the server parses them
/// as plain identifiers, keywords included.
fn names(list: &str) -> Result<Vec<String>, Syntax> {
    split_top(list)
        .into_iter()
        .map(|p| {
            ident(p)
                .map(|(n, _, _)| n)
                .ok_or_else(|| format!("Expected: identifier, found: {}", p.trim()))
        })
        .collect()
}

/// `CREATE TABLE …`, if `sql` is one.
pub fn create_table(sql: &str) -> Option<Result<CreateTable, Syntax>> {
    let rest = strip_ci(strip_ci(sql, "CREATE")?, "TABLE")?;
    Some(parse_create_table(rest))
}

fn parse_create_table(rest: &str) -> Result<CreateTable, Syntax> {
    let (if_not_exists, rest) = match strip_ci(rest, "IF NOT EXISTS") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let (name, _, rest) = ident(rest).ok_or("Expected: table name")?;
    let (body, options) = parens(rest).ok_or("Expected: (")?;
    let mut columns = Vec::new();
    let (mut time_index, mut key) = (None, Vec::new());
    for def in split_top(body) {
        if let Some(r) = strip_ci(def, "TIME INDEX") {
            let (list, _) = parens(r).ok_or("Expected: (")?;
            time_index = names(list)?.into_iter().next();
        } else if let Some(r) = strip_ci(def, "PRIMARY KEY") {
            let (list, _) = parens(r).ok_or("Expected: (")?;
            key = names(list)?;
        } else {
            let (col, rest) = column_name(def)?;
            let upper = rest.to_ascii_uppercase();
            let end = [
                " NULL",
                " NOT NULL",
                " INVERTED",
                " SKIPPING",
                " FULLTEXT",
                " DEFAULT",
            ]
            .iter()
            .filter_map(|k| upper.find(k))
            .min()
            .unwrap_or(rest.len());
            let t = sql_type(&rest[..end])
                .ok_or_else(|| format!("Unsupported data type: {}", rest[..end].trim()))?;
            columns.push((col, t as i32, SemanticType::Field as i32));
        }
    }
    for c in &mut columns {
        if Some(&c.0) == time_index.as_ref() {
            c.2 = SemanticType::Timestamp as i32;
        } else if key.contains(&c.0) {
            c.2 = SemanticType::Tag as i32;
        }
    }
    let squeezed: String = options.split_whitespace().collect::<Vec<_>>().join(" ");
    Ok(CreateTable {
        name,
        if_not_exists,
        columns,
        append_mode: squeezed.contains("append_mode = 'true'"),
    })
}

/// A column `ALTER TABLE … ADD COLUMN [IF NOT EXISTS] c TYPE` adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddColumn {
    pub name: String,
    pub data_type: i32,
    pub if_not_exists: bool,
}

/// `ALTER TABLE t ADD COLUMN [IF NOT EXISTS] c TYPE [NULL][, ADD COLUMN …]`, if `sql` is
/// one (GreptimeDB's `parse_alter_table_add`: comma-separated, `COLUMN` optional): the table
/// and its columns.
pub fn alter_add_column(sql: &str) -> Option<Result<(String, Vec<AddColumn>), Syntax>> {
    let rest = strip_ci(strip_ci(sql, "ALTER")?, "TABLE")?;
    let (table, _, rest) = ident(rest)?;
    strip_ci(rest, "ADD")?;
    let mut columns = Vec::new();
    for item in rest.trim().trim_end_matches(';').split(',') {
        let parsed = (|| {
            let item = strip_ci(item, "ADD").ok_or("Expected: ADD")?;
            let item = strip_ci(item, "COLUMN").unwrap_or(item);
            let (if_not_exists, item) = match strip_ci(item, "IF NOT EXISTS") {
                Some(r) => (true, r),
                None => (false, item),
            };
            let (name, rest) = column_name(item)?;
            let ty = rest.trim();
            let ty = ty.strip_suffix(" NULL").unwrap_or(ty);
            let t = sql_type(ty).ok_or_else(|| format!("Unsupported data type: {ty}"))?;
            Ok::<_, Syntax>(AddColumn {
                name,
                data_type: t as i32,
                if_not_exists,
            })
        })();
        match parsed {
            Ok(c) => columns.push(c),
            Err(e) => return Some(Err(e)),
        }
    }
    Some(Ok((table, columns)))
}

/// `CREATE FLOW …`, if `sql` is one.
pub fn create_flow(sql: &str) -> Option<Result<CreateFlow, Syntax>> {
    let rest = strip_ci(strip_ci(sql, "CREATE")?, "FLOW")?;
    Some(parse_create_flow(rest))
}

fn parse_create_flow(rest: &str) -> Result<CreateFlow, Syntax> {
    let (if_not_exists, rest) = match strip_ci(rest, "IF NOT EXISTS") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let (name, _, rest) = ident(rest).ok_or("Expected: flow name")?;
    let rest = strip_ci(rest, "SINK TO").ok_or("Expected: SINK TO")?;
    let (sink, _, rest) = ident(rest).ok_or("Expected: sink table name")?;
    let (_, query) = rest
        .split_once(" AS SELECT ")
        .ok_or("Expected: AS SELECT")?;
    let (items, from) = query.split_once(" FROM ").ok_or("Expected: FROM")?;
    let (source, _, after) = ident(from).ok_or("Expected: table name")?;
    let group = strip_ci(after, "GROUP BY").unwrap_or("");
    let mut columns = Vec::new();
    let mut outputs = Vec::new();
    for item in split_top(items) {
        let (expr, alias) = match item.rsplit_once(" AS ") {
            Some((e, a)) if ident(a).is_some_and(|(_, _, r)| r.trim().is_empty()) => {
                (e, ident(a).map(|(n, _, _)| n))
            }
            _ => (item, None),
        };
        for q in quoted_names(expr) {
            if !columns.contains(&q) {
                columns.push(q);
            }
        }
        let aggregate = expr.trim_start().to_ascii_lowercase().starts_with("sum(")
            || expr.trim_start().to_ascii_lowercase().starts_with("count(");
        let named = alias.is_some();
        let out = alias
            .or_else(|| ident(expr).map(|(n, _, _)| n))
            .unwrap_or_default();
        outputs.push((out, aggregate, named));
    }
    let group_by = names(group)?;
    Ok(CreateFlow {
        name,
        if_not_exists,
        sink,
        source,
        columns,
        outputs,
        group_by,
    })
}

/// Every `"quoted"` identifier in `s`.
fn quoted_names(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('"') {
        match ident(&rest[i..]) {
            Some((n, true, r)) => {
                out.push(n);
                rest = r;
            }
            _ => break,
        }
    }
    out
}
