//! What PostgreSQL's `jsonb` makes of the JSON the host stores: its size as text, and the NUL
//! character (`\u0000`) it refuses although serde_json accepts it.

use serde_json::Value;

/// The size of a JSON value as text, as the database will store it (near enough: jsonb
/// normalises whitespace).
pub fn text_len(v: &Value) -> u64 {
    struct Counter(u64);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Counter(0);
    // Writing into a counter cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// Whether a JSON value holds a NUL character (`\u0000`) in a string or a key: serde_json
/// accepts one, PostgreSQL's `jsonb` does not.
pub fn has_nul(v: &Value) -> bool {
    // Iterative, whatever the nesting depth.
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) if s.contains('\0') => return true,
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                for (k, v) in map {
                    if k.contains('\0') {
                        return true;
                    }
                    stack.push(v);
                }
            }
            _ => {}
        }
    }
    false
}

/// `v` with every NUL character in its strings and keys replaced by U+FFFD.
pub fn without_nuls(v: Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace('\0', "\u{FFFD}")),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nuls).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.replace('\0', "\u{FFFD}"), without_nuls(v)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nuls_are_found_and_replaced() {
        assert!(!has_nul(&json!({"a": ["b", {"c": 1}]})));
        assert!(has_nul(&json!({"a": ["b", {"c": "x\u{0}"}]})));
        assert!(has_nul(&json!({"k\u{0}": 1})));
        let clean = without_nuls(json!({"k\u{0}": ["a\u{0}b"]}));
        assert!(!has_nul(&clean));
        assert_eq!(clean, json!({"k\u{FFFD}": ["a\u{FFFD}b"]}));
    }

    #[test]
    fn text_len_is_the_compact_text() {
        let v = json!({"a": [1, "x"]});
        assert_eq!(text_len(&v), v.to_string().len() as u64);
    }
}
