//! Python's `str()` and `repr()` of JSON values, which is what PrettyTable
//! shows for a cell holding a dict, a number or a boolean.

use std::fmt::Write as _;

use crate::model::json::{python_float_repr, JsonValue};

/// Python's `str(value)`: strings as they are, everything else as `repr`.
pub(crate) fn python_str(value: &JsonValue) -> String {
    match value {
        JsonValue::String(s) => s.clone(),
        other => python_repr(other),
    }
}

/// Python's `repr(value)` of the object `json.loads` would make.
pub(crate) fn python_repr(value: &JsonValue) -> String {
    let mut out = String::new();
    write_repr(&mut out, value);
    out
}

fn write_repr(out: &mut String, value: &JsonValue) {
    match value {
        JsonValue::Null => out.push_str("None"),
        JsonValue::Bool(true) => out.push_str("True"),
        JsonValue::Bool(false) => out.push_str("False"),
        JsonValue::Int(i) => {
            let _ = write!(out, "{i}");
        }
        JsonValue::BigInt(s) => out.push_str(s),
        JsonValue::Float(f) => out.push_str(&float_repr(*f)),
        JsonValue::String(s) => out.push_str(&string_repr(s)),
        JsonValue::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_repr(out, item);
            }
            out.push(']');
        }
        JsonValue::Object(object) => {
            out.push('{');
            for (i, (key, item)) in object.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&string_repr(key));
                out.push_str(": ");
                write_repr(out, item);
            }
            out.push('}');
        }
    }
}

/// `repr(float)`: as JSON writes it, except for the special values.
fn float_repr(f: f64) -> String {
    if f.is_nan() {
        "nan".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else {
        python_float_repr(f)
    }
}

/// `repr(str)`: single quotes unless the text holds a single quote and no
/// double quote; backslash escapes for the quote, backslash, `\t`, `\n`,
/// `\r` and characters Python does not print.
pub(crate) fn string_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if is_printable(c) => out.push(c),
            c => {
                let u = u32::from(c);
                let _ = if u < 0x100 {
                    write!(out, "\\x{u:02x}")
                } else if u < 0x10000 {
                    write!(out, "\\u{u:04x}")
                } else {
                    write!(out, "\\U{u:08x}")
                };
            }
        }
    }
    out.push(quote);
    out
}

/// An approximation of Python's `str.isprintable` for one character:
/// controls, format characters, separators other than the space, and
/// private-use code points are not printable.
fn is_printable(c: char) -> bool {
    let u = u32::from(c);
    !matches!(
        u,
        0x00..=0x1f
            | 0x7f..=0xa0
            | 0xad
            | 0x600..=0x605
            | 0x61c
            | 0x6dd
            | 0x70f
            | 0x1680
            | 0x180e
            | 0x2000..=0x200f
            | 0x2028..=0x202f
            | 0x205f..=0x2064
            | 0x2066..=0x206f
            | 0x3000
            | 0xd800..=0xf8ff
            | 0xfeff
            | 0xfff9..=0xfffb
            | 0xe0001
            | 0xe0020..=0xe007f
            | 0xf0000..=0x10ffff
    )
}
