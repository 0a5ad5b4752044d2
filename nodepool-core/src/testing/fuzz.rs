//! Seeded generators of hostile input, for the "no panic on any input"
//! property tests: extreme numbers for config keys, garbage JSON for cloud
//! answers and store records.
//!
//! Deterministic from a seed (a xorshift generator), so a failure names the
//! seed that reproduces it; no dependency beyond the standard library.

use serde_json::{Map, Number, Value};

/// Values every numeric config key is tried with, as YAML text: the
/// extremes of i64 and u64, beyond them, huge and tiny floats, infinities,
/// NaN, negative, fractional and zero, and a few that are no number.
pub const EXTREME_YAML_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "0.5",
    "-0.5",
    "1.0e+30",
    "-1.0e+30",
    "1.7976931348623157e+308",
    "4.9e-324",
    ".inf",
    "-.inf",
    ".nan",
    "9223372036854775807",
    "-9223372036854775808",
    "9223372036854775808",
    "18446744073709551615",
    "99999999999999999999999999",
    "4294967296",
    "65536",
    "0x7fffffffffffffff",
    "'12'",
    "'.inf'",
    "'nan'",
    "abc",
    "true",
    "null",
    "[]",
    "{}",
];

/// A small deterministic random generator (xorshift64*).
#[derive(Debug, Clone)]
pub struct Fuzz {
    state: u64,
}

impl Fuzz {
    /// A generator for `seed` (0 is replaced by a fixed non-zero value).
    pub fn new(seed: u64) -> Self {
        Self {
            state: if seed == 0 {
                0x9E37_79B9_7F4A_7C15
            } else {
                seed
            },
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// One of `items` (panics on an empty slice: a test's own mistake).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// An extreme or odd number: i64/u64 limits, huge and tiny floats,
    /// negative, zero, fractional (JSON has no NaN or infinity; see
    /// [`Fuzz::nan_ish_string`]).
    pub fn extreme_number(&mut self) -> Value {
        match self.below(14) {
            0 => Value::from(i64::MAX),
            1 => Value::from(i64::MIN),
            2 => Value::from(u64::MAX),
            3 => Value::from(-1),
            4 => Value::from(0),
            5 => Number::from_f64(1e308).map_or(Value::Null, Value::Number),
            6 => Number::from_f64(-1e308).map_or(Value::Null, Value::Number),
            7 => Number::from_f64(0.5).map_or(Value::Null, Value::Number),
            8 => Number::from_f64(-0.000_001).map_or(Value::Null, Value::Number),
            9 => Number::from_f64(1.7e19).map_or(Value::Null, Value::Number),
            10 => Value::from(4_294_967_296_i64),
            11 => Value::from(self.next_u64()),
            12 => Number::from_f64(253_402_300_800.5).map_or(Value::Null, Value::Number),
            _ => Value::from(self.next_u64() as i64),
        }
    }

    /// A string that is almost a number, a date or nothing at all.
    pub fn nan_ish_string(&mut self) -> Value {
        const TEXTS: &[&str] = &[
            "",
            "NaN",
            "nan",
            "inf",
            "-inf",
            "Infinity",
            "1e309",
            "-0",
            "0x10",
            "18446744073709551616",
            "99999999999999999999999999999999",
            "9999-12-31T23:59:59.999999999999Z",
            "0000-00-00T00:00:00Z",
            "2024-02-30T25:61:61.5Z",
            "+275760-09-13T00:00:00.000000Z",
            "2026-01-01T00:00:00.99999999999999999999+99:99",
            "1970-01-01T00:00:00Z",
            "ACTIVE",
            "running",
            "\u{0}",
            "ü😀",
            "[]",
            "{}",
            "null",
            "12abc",
            "-9223372036854775809",
            "10.0.0.1",
            "::1",
            "999.999.999.999",
        ];
        Value::from(*self.pick(TEXTS))
    }

    /// A scalar of any JSON type, odd values preferred.
    pub fn scalar(&mut self) -> Value {
        match self.below(6) {
            0 | 1 => self.extreme_number(),
            2 | 3 => self.nan_ish_string(),
            4 => Value::Bool(self.one_in(2)),
            _ => Value::Null,
        }
    }

    /// Garbage JSON shaped like the answers a parser reads: objects whose
    /// keys come from `keys` (the fields the parser looks at), values of
    /// every type, nested up to `depth` levels, lists included.
    pub fn garbage(&mut self, keys: &[&str], depth: usize) -> Value {
        if depth == 0 || self.one_in(4) {
            return self.scalar();
        }
        match self.below(3) {
            0 => {
                let n = self.below(4);
                Value::Array((0..n).map(|_| self.garbage(keys, depth - 1)).collect())
            }
            _ => {
                let mut map = Map::new();
                let n = if keys.is_empty() {
                    0
                } else {
                    1 + self.below(keys.len().min(8))
                };
                for _ in 0..n {
                    let key = self.pick(keys).to_string();
                    let value = self.garbage(keys, depth - 1);
                    map.insert(key, value);
                }
                Value::Object(map)
            }
        }
    }

    /// `value` with one randomly chosen leaf (or subtree) replaced by
    /// garbage, one removed, or left as is: a well-formed answer made
    /// hostile in one place, so parsing reaches past the first check.
    pub fn mutate(&mut self, value: &Value, keys: &[&str]) -> Value {
        // Walk down by looking, noting the way as a JSON pointer; then
        // change what it leads to.
        let mut pointer = String::new();
        let mut node = value;
        loop {
            let len = match node {
                Value::Object(map) => map.len(),
                Value::Array(items) => items.len(),
                _ => 0,
            };
            if len == 0 || self.below(3) == 0 {
                break;
            }
            let i = self.below(len);
            let next = match node {
                Value::Object(map) => map.iter().nth(i).map(|(k, v)| {
                    pointer.push('/');
                    pointer.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    v
                }),
                Value::Array(items) => items.get(i).inspect(|_| {
                    pointer.push('/');
                    pointer.push_str(&i.to_string());
                }),
                _ => None,
            };
            match next {
                Some(child) => node = child,
                None => break,
            }
        }
        let mut out = value.clone();
        let choice = self.below(4);
        let replacement = match choice {
            1 => self.garbage(keys, 2),
            _ => self.scalar(),
        };
        let remove_at = self.next_u64() as usize;
        if let Some(target) = out.pointer_mut(&pointer) {
            match (choice, target) {
                (0, Value::Object(map)) if !map.is_empty() => {
                    let key = map.keys().nth(remove_at % map.len()).cloned();
                    if let Some(key) = key {
                        map.remove(&key);
                    }
                }
                (_, target) => *target = replacement,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_garbage() {
        let keys = ["id", "status", "addresses"];
        let a: Vec<Value> = {
            let mut f = Fuzz::new(7);
            (0..20).map(|_| f.garbage(&keys, 3)).collect()
        };
        let b: Vec<Value> = {
            let mut f = Fuzz::new(7);
            (0..20).map(|_| f.garbage(&keys, 3)).collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().any(Value::is_object), "objects are generated");
    }

    #[test]
    fn mutation_changes_a_well_formed_value() {
        let base = serde_json::json!({"server": {"id": "a", "status": "ACTIVE"}});
        let mut f = Fuzz::new(3);
        let changed = (0..50).filter(|_| f.mutate(&base, &["id"]) != base).count();
        assert!(changed > 25, "most mutations change the value: {changed}");
    }
}
