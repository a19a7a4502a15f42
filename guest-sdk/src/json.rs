//! Decoding JSON text into serde types with errors that name the offending field.
//!
//! serde_json reports *where* in the text a data error happened (line and column) but, for
//! errors such as `invalid type: integer `5`, expected a string`, not *which field* it was.
//! [`decode`] runs the deserializer through `serde_path_to_error`, which tracks the path of
//! the value being deserialized, and renders that path as `inputs.ms_path` / `items[3].name`.

use serde::de::DeserializeOwned;
use serde_path_to_error::{Path, Segment};

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
    let mut de = serde_json::Deserializer::from_str(source);
    // `end` refuses trailing characters after the value, as `serde_json::from_str` does.
    let decoded = serde_path_to_error::deserialize(&mut de)
        .map_err(|err| (render(err.path()), err.into_inner()))
        .and_then(|value| de.end().map(|()| value).map_err(|err| (String::new(), err)));
    decoded.map_err(|(path, err)| {
        let syntax = matches!(
            err.classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        );
        let full = err.to_string();
        let suffix = format!(" at line {} column {}", err.line(), err.column());
        let problem = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
        DecodeError {
            // A syntax error's path is only where the scanner was; the message gives the
            // line and column instead.
            path: if syntax { String::new() } else { path },
            problem,
            syntax,
            line: err.line(),
            column: err.column(),
        }
    })
}

/// `inputs.ms_path`, `n[1]`, `extra["a b"][1]`: keys that are not plain identifiers are quoted
/// as JSON strings in brackets, so the path reads unambiguously; the document itself is "".
fn render(path: &Path) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => {
                out.push('[');
                out.push_str(&index.to_string());
                out.push(']');
            }
            Segment::Map { key } | Segment::Enum { variant: key } => {
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
            // A map key that is not a string (serde_path_to_error cannot name it).
            Segment::Unknown => out.push_str("[?]"),
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
    fn trailing_text_is_refused() {
        let e = decode::<Option<u32>>("1 2").unwrap_err();
        assert!(e.syntax, "{e:?}");
        assert!(
            e.describe().contains("trailing characters"),
            "{}",
            e.describe()
        );
        assert!(decode::<Option<u32>>(" 1 \n").is_ok());
    }

    #[test]
    fn numeric_map_keys_are_named() {
        let e = decode::<HashMap<u32, u32>>(r#"{"1": 2, "17": "x"}"#).unwrap_err();
        assert_eq!(e.path, "17");
    }

    #[test]
    fn empty_text_is_null() {
        assert_eq!(decode::<Option<u32>>("").unwrap(), None);
        assert_eq!(decode::<()>("  ").unwrap(), ());
    }
}
