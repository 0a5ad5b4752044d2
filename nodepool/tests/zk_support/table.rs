//! Reading the text tables upstream's CLI prints (Python's prettytable):
//! `+---+` rules, a header row, data rows, cells between `|`.

use std::collections::BTreeMap;

/// One row: header → trimmed cell.
pub type Row = BTreeMap<String, String>;

/// Every table in `text`, in order.
pub fn parse_all(text: &str) -> Vec<Vec<Row>> {
    let mut tables = Vec::new();
    let mut header: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('+') {
            continue;
        }
        if !line.starts_with('|') {
            if header.take().is_some() {
                tables.push(std::mem::take(&mut rows));
            }
            continue;
        }
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect();
        match &header {
            None => header = Some(cells),
            Some(h) => rows.push(h.iter().cloned().zip(cells).collect()),
        }
    }
    if header.is_some() {
        tables.push(rows);
    }
    tables
}

/// The rows of the first table in `text` (none if there is no table).
pub fn parse(text: &str) -> Vec<Row> {
    parse_all(text).into_iter().next().unwrap_or_default()
}

/// The values of column `column`, in row order.
pub fn column(rows: &[Row], column: &str) -> Vec<String> {
    rows.iter()
        .map(|r| r.get(column).cloned().unwrap_or_default())
        .collect()
}
