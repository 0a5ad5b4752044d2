//! Text tables as upstream's PrettyTable 0.7.2 draws them with
//! `align = 'l'` and its other defaults (borders, one space of padding,
//! a rule above and below the header and below the last row).

use unicode_normalization::char::canonical_combining_class;

/// Draws a table the way `str(PrettyTable(headers))` does after
/// `t.align = 'l'` and one `t.add_row(row)` per row. Cells may hold
/// several lines (`"\n"`); each row is as tall as its tallest cell.
/// The result has no trailing newline, as `str(t)`.
pub fn pretty_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| block_width(h)).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(block_width(cell));
        }
    }
    let rule = hrule(&widths);
    let mut lines = Vec::with_capacity(rows.len() + 4);
    lines.push(rule.clone());
    let mut header = String::from("|");
    if headers.is_empty() {
        header.push('|');
    }
    for (h, w) in headers.iter().zip(&widths) {
        push_cell(&mut header, h, *w);
    }
    lines.push(header);
    lines.push(rule.clone());
    for row in rows {
        lines.push(render_row(row, &widths));
    }
    lines.push(rule);
    lines.join("\n")
}

/// `+---+----+`: one run of dashes per column, two wider than its text.
fn hrule(widths: &[usize]) -> String {
    let mut out = String::from("+");
    if widths.is_empty() {
        out.push('+');
        return out;
    }
    for w in widths {
        out.extend(std::iter::repeat('-').take(w + 2));
        out.push('+');
    }
    out
}

/// `" text<pad> |"`.
fn push_cell(out: &mut String, text: &str, width: usize) {
    out.push(' ');
    out.push_str(text);
    let used = display_width(text);
    if width > used {
        out.extend(std::iter::repeat(' ').take(width - used));
    }
    out.push_str(" |");
}

fn render_row(row: &[String], widths: &[usize]) -> String {
    let cells: Vec<Vec<&str>> = row.iter().map(|c| c.split('\n').collect()).collect();
    let height = cells.iter().map(Vec::len).max().unwrap_or(0);
    let mut lines = Vec::with_capacity(height);
    for y in 0..height {
        let mut line = String::from("|");
        for (cell, w) in cells.iter().zip(widths) {
            push_cell(&mut line, cell.get(y).copied().unwrap_or(""), *w);
        }
        lines.push(line);
    }
    lines.join("\n")
}

/// The width of the widest line of `text` (PrettyTable's `_get_size`).
pub(crate) fn block_width(text: &str) -> usize {
    text.split('\n').map(display_width).max().unwrap_or(0)
}

/// PrettyTable's `_str_block_width` of one line: ANSI colour codes count
/// nothing, CJK ideographs, Hangul, kana and full-width forms count two,
/// combining characters nothing, backspace and delete minus one. Negative
/// totals count as zero.
fn display_width(line: &str) -> usize {
    let total: i64 = strip_ansi(line).chars().map(char_width).sum();
    usize::try_from(total).unwrap_or(0)
}

fn char_width(c: char) -> i64 {
    let u = u32::from(c);
    match u {
        0x21..=0x7e => 1,
        0x4e00..=0x9fff | 0xac00..=0xd7af => 2,
        _ if canonical_combining_class(c) != 0 => 0,
        0x3040..=0x30ff | 0xff01..=0xff60 | 0x3000..=0x303e => 2,
        0x08 | 0x7f => -1,
        // Upstream tests `char in (0x0000, 0x001f)`: those two only.
        0x00 | 0x1f => 0,
        _ => 1,
    }
}

/// Removes `ESC [ digits-and-semicolons m` sequences, as PrettyTable's
/// `_re.sub("", val)` does before measuring.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(pos) = rest.find('\u{1b}') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let matched = after.strip_prefix('[').and_then(|params| {
            let end = params
                .find(|c: char| !(c.is_ascii_digit() || c == ';'))
                .unwrap_or(params.len());
            params[end..].strip_prefix('m')
        });
        match matched {
            Some(tail) => rest = tail,
            None => {
                out.push('\u{1b}');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}
