//! Writing JSON as Python's `json.dumps` does with its defaults.
use std::fmt::Write as _;

use super::{JsonObject, JsonValue};

/// Python's `repr(float)`, which `json.dumps` uses for floats: the shortest
/// digits that read back to the same value, in positional notation when the
/// decimal exponent is in `-4..16` (with a trailing `.0` for whole numbers)
/// and in scientific notation (`1e+16`, `1.5e-07`) otherwise. NaN and the
/// infinities are written `NaN`, `Infinity` and `-Infinity`, as `json.dumps`
/// does by default.
pub fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    // Rust's `{:e}` gives the shortest round-tripping digits: "d.ddde[-]x".
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exp: i32 = exp.parse().unwrap_or(0);
    // Position of the decimal point relative to the first digit.
    let decpt = exp + 1;
    let mut out = String::new();
    if x.is_sign_negative() {
        out.push('-');
    }
    let ndigits = digits.len() as i32;
    if (-3..=16).contains(&decpt) {
        if decpt <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat('0').take((-decpt) as usize));
            out.push_str(&digits);
        } else if decpt >= ndigits {
            out.push_str(&digits);
            out.extend(std::iter::repeat('0').take((decpt - ndigits) as usize));
            out.push_str(".0");
        } else {
            let (int, frac) = digits.split_at(decpt as usize);
            out.push_str(int);
            out.push('.');
            out.push_str(frac);
        }
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let e = decpt - 1;
        let _ = write!(out, "e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    out
}

/// A string as `json.dumps` writes it with `ensure_ascii=True`: `\"`, `\\`,
/// `\n`, `\r`, `\t`, `\b`, `\f`, and `\u00XX` (lower-case hex) for every
/// other character outside `' '..='~'`, astral characters as surrogate
/// pairs.
pub(crate) fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

pub(crate) fn write_value(out: &mut String, value: &JsonValue, sort_keys: bool) {
    match value {
        JsonValue::Null => out.push_str("null"),
        JsonValue::Bool(true) => out.push_str("true"),
        JsonValue::Bool(false) => out.push_str("false"),
        JsonValue::Int(i) => {
            let _ = write!(out, "{i}");
        }
        JsonValue::BigInt(s) => out.push_str(s),
        JsonValue::Float(f) => out.push_str(&python_float_repr(*f)),
        JsonValue::String(s) => write_str(out, s),
        JsonValue::Array(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push_str(", ");
                }
                write_value(out, item, sort_keys);
            }
            out.push(']');
        }
        JsonValue::Object(o) => write_object(out, o, sort_keys),
    }
}

fn write_object(out: &mut String, o: &JsonObject, sort_keys: bool) {
    let mut entries: Vec<(&String, &JsonValue)> = o.iter().collect();
    if sort_keys {
        // Python compares str by code point; UTF-8 byte order is the same.
        entries.sort_by(|a, b| a.0.cmp(b.0));
    }
    out.push('{');
    for (n, (k, v)) in entries.into_iter().enumerate() {
        if n > 0 {
            out.push_str(", ");
        }
        write_str(out, k);
        out.push_str(": ");
        write_value(out, v, sort_keys);
    }
    out.push('}');
}

/// Writes one JSON object key by key, in the order of the calls, the way
/// `json.dumps` writes a `dict` (keys not sorted).
#[derive(Debug, Default)]
pub struct JsonWriter {
    out: String,
    fields: usize,
}

impl JsonWriter {
    /// Start an object.
    pub fn new() -> Self {
        Self {
            out: String::from("{"),
            fields: 0,
        }
    }

    fn key(&mut self, key: &str) {
        if self.fields > 0 {
            self.out.push_str(", ");
        }
        self.fields += 1;
        write_str(&mut self.out, key);
        self.out.push_str(": ");
    }

    /// Any value.
    pub fn value(&mut self, key: &str, value: &JsonValue) -> &mut Self {
        self.key(key);
        write_value(&mut self.out, value, false);
        self
    }

    /// An optional value; `None` is `null`.
    pub fn opt_value(&mut self, key: &str, value: Option<&JsonValue>) -> &mut Self {
        self.key(key);
        match value {
            Some(v) => write_value(&mut self.out, v, false),
            None => self.out.push_str("null"),
        }
        self
    }

    /// A string or `null`.
    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        self.key(key);
        match value {
            Some(s) => write_str(&mut self.out, s),
            None => self.out.push_str("null"),
        }
        self
    }

    /// An integer.
    pub fn int(&mut self, key: &str, value: i64) -> &mut Self {
        self.key(key);
        let _ = write!(self.out, "{value}");
        self
    }

    /// An integer or `null`.
    pub fn opt_int(&mut self, key: &str, value: Option<i64>) -> &mut Self {
        match value {
            Some(v) => self.int(key, v),
            None => self.null(key),
        }
    }

    /// A float as Python writes it, or `null`.
    pub fn opt_float(&mut self, key: &str, value: Option<f64>) -> &mut Self {
        self.key(key);
        match value {
            Some(f) => self.out.push_str(&python_float_repr(f)),
            None => self.out.push_str("null"),
        }
        self
    }

    /// A boolean.
    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
        self
    }

    /// `null`.
    pub fn null(&mut self, key: &str) -> &mut Self {
        self.key(key);
        self.out.push_str("null");
        self
    }

    /// A list of strings.
    pub fn str_list(&mut self, key: &str, values: &[String]) -> &mut Self {
        self.key(key);
        self.out.push('[');
        for (n, s) in values.iter().enumerate() {
            if n > 0 {
                self.out.push_str(", ");
            }
            write_str(&mut self.out, s);
        }
        self.out.push(']');
        self
    }

    /// Every entry of `extra`, in its order.
    pub fn extra(&mut self, extra: &JsonObject) -> &mut Self {
        for (k, v) in extra.iter() {
            self.value(k, v);
        }
        self
    }

    /// Close the object and return its bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.push('}');
        self.out.into_bytes()
    }
}
