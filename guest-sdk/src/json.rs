//! Decoding JSON text into serde types with errors that name the offending field.
//!
//! serde_json reports *where* in the text a data error happened (line and column) but, for
//! errors such as `invalid type: integer `5`, expected a string`, not *which field* it was.
//! [`decode`] recovers the field path by scanning the text up to the error position and
//! tracking the enclosing objects' keys and arrays' indices.

use serde::de::DeserializeOwned;

/// A JSON decoding failure, with the path of the field it concerns when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// `inputs.ms_path`, `items[3].name`, or empty for the document itself.
    pub path: String,
    /// serde_json's message without its ` at line L column C` suffix.
    pub problem: String,
    /// `true` when the text is not JSON at all (as opposed to JSON of the wrong shape).
    pub syntax: bool,
    pub line: usize,
    pub column: usize,
}

impl DecodeError {
    /// One line describing the failure, naming the field:
    /// ``field `inputs.ms_path`: invalid type: integer `5`, expected a string``.
    pub fn describe(&self) -> String {
        if self.syntax {
            format!(
                "not valid JSON: {} at line {} column {}",
                self.problem, self.line, self.column
            )
        } else if self.path.is_empty() {
            self.problem.clone()
        } else {
            format!("field `{}`: {}", self.path, self.problem)
        }
    }

    /// The same facts as JSON, for a task error's `details`.
    pub fn details(&self) -> serde_json::Value {
        serde_json::json!({
            "path": self.path,
            "error": self.problem,
            "line": self.line,
            "column": self.column,
        })
    }
}

/// Decodes `text` into `T`. Empty (or all-whitespace) text decodes as JSON `null`, so a
/// task without params can take `()`, `Option<_>` or a struct with all-optional fields.
pub fn decode<T: DeserializeOwned>(text: &str) -> Result<T, DecodeError> {
    let source = if text.trim().is_empty() { "null" } else { text };
    serde_json::from_str(source).map_err(|err| {
        let syntax = matches!(
            err.classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        );
        let full = err.to_string();
        let suffix = format!(" at line {} column {}", err.line(), err.column());
        let problem = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
        let path = if syntax {
            String::new()
        } else {
            path_at(source, byte_offset(source, err.line(), err.column()))
        };
        DecodeError {
            path,
            problem,
            syntax,
            line: err.line(),
            column: err.column(),
        }
    })
}

/// The byte offset just past serde_json's (1-based line, byte column) position.
fn byte_offset(text: &str, line: usize, column: usize) -> usize {
    let mut start = 0;
    if line > 1 {
        let mut seen = 1;
        for (i, b) in text.bytes().enumerate() {
            if b == b'\n' {
                seen += 1;
                if seen == line {
                    start = i + 1;
                    break;
                }
            }
        }
    }
    let mut end = (start + column).min(text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    end
}

enum Frame {
    /// An object; `key` is the most recent key read in it (cleared by `,`).
    Object { key: Option<String> },
    /// An array; `index` is the current element, `started` once an element began.
    Array { index: usize, started: bool },
}

/// The path of the value being read when the scanner has consumed `text[..end]`.
///
/// Conventions, matching where serde_json places its errors:
/// - an error right after a scalar (`"ms_path": 5`) names that scalar's field;
/// - an error at a container's opening (`"n": {`) names the field holding it;
/// - an error after a container's closing brace (missing field) names that container.
fn path_at(text: &str, end: usize) -> String {
    let bytes = &text.as_bytes()[..end];
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => {
                start_value(&mut stack);
                stack.push(Frame::Object { key: None });
                i += 1;
            }
            b'[' => {
                start_value(&mut stack);
                stack.push(Frame::Array {
                    index: 0,
                    started: false,
                });
                i += 1;
            }
            b'}' | b']' => {
                stack.pop();
                i += 1;
            }
            b',' => {
                match stack.last_mut() {
                    Some(Frame::Object { key }) => *key = None,
                    Some(Frame::Array { index, started }) => {
                        *index += 1;
                        *started = false;
                    }
                    None => {}
                }
                i += 1;
            }
            b'"' => {
                let close = string_end(bytes, i);
                let is_key = matches!(stack.last(), Some(Frame::Object { key: None }));
                if is_key {
                    let raw = &text[i..close.min(text.len())];
                    let name = serde_json::from_str::<String>(raw)
                        .unwrap_or_else(|_| raw.trim_matches('"').to_string());
                    if let Some(Frame::Object { key }) = stack.last_mut() {
                        *key = Some(name);
                    }
                } else {
                    start_value(&mut stack);
                }
                i = close;
            }
            b' ' | b'\t' | b'\r' | b'\n' | b':' => i += 1,
            _ => {
                // A number or literal: consume it whole.
                start_value(&mut stack);
                while i < bytes.len()
                    && !matches!(bytes[i], b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n')
                {
                    i += 1;
                }
            }
        }
    }
    render(&stack)
}

fn start_value(stack: &mut [Frame]) {
    if let Some(Frame::Array { started, .. }) = stack.last_mut() {
        *started = true;
    }
}

/// Index just past the closing quote of the string starting at `open` (or the end).
fn string_end(bytes: &[u8], open: usize) -> usize {
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

fn render(stack: &[Frame]) -> String {
    let mut out = String::new();
    for frame in stack {
        match frame {
            Frame::Object { key: Some(key) } => {
                let plain = !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '$');
                if plain {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                } else {
                    out.push('[');
                    out.push_str(&serde_json::Value::String(key.clone()).to_string());
                    out.push(']');
                }
            }
            Frame::Array {
                index,
                started: true,
            } => {
                out.push('[');
                out.push_str(&index.to_string());
                out.push(']');
            }
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::HashMap;

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Inputs {
        ms_path: String,
        n: Option<Vec<u32>>,
        extra: Option<HashMap<String, Vec<bool>>>,
    }

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    #[serde(deny_unknown_fields)]
    struct Params {
        inputs: Inputs,
        kind: Option<Kind>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(rename_all = "lowercase")]
    enum Kind {
        A,
    }

    fn err(text: &str) -> DecodeError {
        decode::<Params>(text).unwrap_err()
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = err(r#"{"inputs": {"ms_path": 5}}"#);
        assert_eq!(e.path, "inputs.ms_path");
        assert!(!e.syntax);
        assert_eq!(
            e.describe(),
            "field `inputs.ms_path`: invalid type: integer `5`, expected a string"
        );
    }

    #[test]
    fn missing_field_names_container_and_field() {
        let e = err(r#"{"inputs": {"n": [1]}}"#);
        assert_eq!(e.path, "inputs");
        assert!(
            e.describe().contains("missing field `ms_path`"),
            "{}",
            e.describe()
        );
        let e = err(r#"{}"#);
        assert_eq!(e.path, "");
        assert_eq!(e.describe(), "missing field `inputs`");
    }

    #[test]
    fn containers_and_arrays() {
        assert_eq!(
            err(r#"{"inputs": {"ms_path": {"a": 1}}}"#).path,
            "inputs.ms_path"
        );
        assert_eq!(
            err(r#"{"inputs": {"ms_path": [1, 2]}}"#).path,
            "inputs.ms_path"
        );
        assert_eq!(
            err(r#"{"inputs": {"ms_path": "x", "n": [1, "a"]}}"#).path,
            "inputs.n[1]"
        );
        assert_eq!(
            err(r#"{"inputs": {"ms_path": "x", "n": [1, 99999999999]}}"#).path,
            "inputs.n[1]"
        );
        assert_eq!(
            err(r#"{"inputs": {"ms_path": "x", "n": {"k": 1}}}"#).path,
            "inputs.n"
        );
        assert_eq!(
            err(r#"{"inputs": {"ms_path": "x", "extra": {"a b": [true, 3]}}}"#).path,
            r#"inputs.extra["a b"][1]"#
        );
        assert_eq!(err(r#"{"inputs": 3}"#).path, "inputs");
    }

    #[test]
    fn strings_with_tricky_characters_and_newlines() {
        let text = "{\n  \"inputs\": {\n    \"ms_path\": \"a,}]\\\"{\",\n    \"n\": [\n      true\n    ]\n  }\n}";
        let e = err(text);
        assert_eq!(e.path, "inputs.n[0]");
        assert_eq!(e.line, 5);
    }

    #[test]
    fn unknown_variant_and_field() {
        assert_eq!(
            err(r#"{"inputs": {"ms_path": "x"}, "kind": "c"}"#).path,
            "kind"
        );
        let e = err(r#"{"inputs": {"ms_path": "x"}, "zz": 1}"#);
        assert!(e.describe().contains("unknown field `zz`"));
    }

    #[test]
    fn syntax_errors() {
        let e = err(r#"{"inputs": "#);
        assert!(e.syntax);
        assert!(
            e.describe().starts_with("not valid JSON: "),
            "{}",
            e.describe()
        );
    }

    #[test]
    fn empty_text_is_null() {
        assert_eq!(decode::<Option<u32>>("").unwrap(), None);
        assert_eq!(decode::<()>("  ").unwrap(), ());
    }
}
