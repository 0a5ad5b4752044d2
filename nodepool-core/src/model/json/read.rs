//! Reading JSON as Python's `json.loads` does.
use super::{JsonObject, JsonValue};

/// Deepest nesting accepted; deeper input is an error (Python would raise
/// `RecursionError` at about this depth too), never a stack overflow.
const MAX_DEPTH: usize = 256;

/// Why a document could not be read, and where (byte offset).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at byte {offset}")]
pub struct ParseError {
    /// What is wrong.
    pub message: String,
    /// Byte offset in the input.
    pub offset: usize,
}

/// Parse a UTF-8 JSON document the way Python's `json.loads` does:
/// integers stay integers of any size, `NaN`/`Infinity`/`-Infinity` are
/// accepted, a repeated key keeps its first position and its last value, a
/// leading UTF-8 byte-order mark is skipped. Lone surrogate escapes, which
/// Python accepts, are rejected (a Rust string cannot hold them).
pub fn parse(data: &[u8]) -> Result<JsonValue, ParseError> {
    let data = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(data);
    let text = std::str::from_utf8(data).map_err(|e| ParseError {
        message: "invalid UTF-8".to_owned(),
        offset: e.valid_up_to(),
    })?;
    let mut p = Parser { s: text, pos: 0 };
    p.ws();
    let value = p.value(0)?;
    p.ws();
    if p.pos != p.s.len() {
        return Err(p.err("extra data after the document"));
    }
    Ok(value)
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, message: &str) -> ParseError {
        ParseError {
            message: message.to_owned(),
            offset: self.pos,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> bool {
        if self.s[self.pos..].starts_with(lit) {
            self.pos += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<JsonValue, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        match self.peek() {
            None => Err(self.err("expected a value, found the end")),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => Ok(JsonValue::String(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => {
                for (lit, value) in [
                    ("null", JsonValue::Null),
                    ("true", JsonValue::Bool(true)),
                    ("false", JsonValue::Bool(false)),
                    ("NaN", JsonValue::Float(f64::NAN)),
                    ("Infinity", JsonValue::Float(f64::INFINITY)),
                ] {
                    if self.eat(lit) {
                        return Ok(value);
                    }
                }
                Err(self.err("expected a value"))
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<JsonValue, ParseError> {
        self.pos += 1;
        let mut obj = JsonObject::new();
        self.ws();
        if self.eat("}") {
            return Ok(JsonValue::Object(obj));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a key in double quotes"));
            }
            let key = self.string()?;
            self.ws();
            if !self.eat(":") {
                return Err(self.err("expected ':'"));
            }
            self.ws();
            let value = self.value(depth + 1)?;
            obj.insert(key, value);
            self.ws();
            if self.eat(",") {
                continue;
            }
            if self.eat("}") {
                return Ok(JsonValue::Object(obj));
            }
            return Err(self.err("expected ',' or '}'"));
        }
    }

    fn array(&mut self, depth: usize) -> Result<JsonValue, ParseError> {
        self.pos += 1;
        let mut items = Vec::new();
        self.ws();
        if self.eat("]") {
            return Ok(JsonValue::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value(depth + 1)?);
            self.ws();
            if self.eat(",") {
                continue;
            }
            if self.eat("]") {
                return Ok(JsonValue::Array(items));
            }
            return Err(self.err("expected ',' or ']'"));
        }
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let hex = self
            .s
            .get(self.pos..self.pos + 4)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.err("invalid \\u escape"))?;
        self.pos += 4;
        u32::from_str_radix(hex, 16).map_err(|_| self.err("invalid \\u escape"))
    }

    fn string(&mut self) -> Result<String, ParseError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let rest = &self.s[self.pos..];
            let stop = rest
                .bytes()
                .position(|b| b == b'"' || b == b'\\' || b < 0x20)
                .ok_or_else(|| self.err("unterminated string"))?;
            out.push_str(&rest[..stop]);
            self.pos += stop;
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let esc = self.peek().ok_or_else(|| self.err("unterminated string"))?;
                    self.pos += 1;
                    match esc {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape()?),
                        _ => {
                            self.pos -= 1;
                            return Err(self.err("invalid escape"));
                        }
                    }
                }
                _ => return Err(self.err("control character in string")),
            }
        }
    }

    fn unicode_escape(&mut self) -> Result<char, ParseError> {
        let first = self.hex4()?;
        let code = if (0xd800..0xdc00).contains(&first) {
            if !self.eat("\\u") {
                return Err(self.err("lone surrogate in \\u escape"));
            }
            let second = self.hex4()?;
            if !(0xdc00..0xe000).contains(&second) {
                return Err(self.err("lone surrogate in \\u escape"));
            }
            0x10000 + ((first - 0xd800) << 10) + (second - 0xdc00)
        } else {
            first
        };
        char::from_u32(code).ok_or_else(|| self.err("lone surrogate in \\u escape"))
    }

    fn number(&mut self) -> Result<JsonValue, ParseError> {
        let start = self.pos;
        if self.eat("-Infinity") {
            return Ok(JsonValue::Float(f64::NEG_INFINITY));
        }
        let bytes = self.s.as_bytes();
        let digits = |p: &mut usize| {
            let from = *p;
            while bytes.get(*p).is_some_and(u8::is_ascii_digit) {
                *p += 1;
            }
            *p - from
        };
        let mut p = self.pos;
        if bytes.get(p) == Some(&b'-') {
            p += 1;
        }
        let int_start = p;
        let n = digits(&mut p);
        if n == 0 {
            self.pos = p;
            return Err(self.err("expected a digit"));
        }
        // Like Python: "0123" reads "0", then fails on the extra data.
        if bytes[int_start] == b'0' {
            p = int_start + 1;
        }
        let mut is_float = false;
        if bytes.get(p) == Some(&b'.') && bytes.get(p + 1).is_some_and(u8::is_ascii_digit) {
            p += 1;
            digits(&mut p);
            is_float = true;
        }
        if matches!(bytes.get(p), Some(b'e' | b'E')) {
            let mut q = p + 1;
            if matches!(bytes.get(q), Some(b'+' | b'-')) {
                q += 1;
            }
            if digits(&mut q) > 0 {
                p = q;
                is_float = true;
            }
        }
        self.pos = p;
        let text = &self.s[start..p];
        if is_float {
            return text
                .parse::<f64>()
                .map(JsonValue::Float)
                .map_err(|_| self.err("invalid number"));
        }
        Ok(match text.parse::<i128>() {
            Ok(i) => JsonValue::Int(i),
            // Only digits here, so the only failure is the size.
            Err(_) => JsonValue::BigInt(text.to_owned()),
        })
    }
}
