//! Figures: what every benchmark scenario produces, and how they are printed.
//!
//! A scenario returns [`Figure`]s. The runner prints them as a table per scenario and, as the
//! very last line of output, one JSON object holding every figure (keyed
//! `"<scenario>.<metric>"`), so a script can read the results with `tail -n1 | jq`.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

/// One measured number.
#[derive(Debug, Clone)]
pub struct Figure {
    /// The scenario it belongs to, e.g. `"e2e"` or `"sandbox"`.
    pub scenario: String,
    /// What was measured, e.g. `"wasm_echo.tasks_per_s"`; unique within the scenario.
    pub metric: String,
    pub value: f64,
    /// `"tasks/s"`, `"µs"`, `"ms"`, `"MiB"`, `"%"`, ...
    pub unit: &'static str,
    /// The target this figure is judged against, if any.
    pub target: Option<Target>,
    /// A short remark printed beside it (how it was measured, spread of the repetitions).
    pub note: String,
}

/// A target: the figure must be at least / at most `bound`.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
}

impl Target {
    pub fn met(&self, value: f64) -> bool {
        match *self {
            Target::AtLeast(b) => value >= b,
            Target::AtMost(b) => value <= b,
        }
    }

    fn describe(&self) -> String {
        match *self {
            Target::AtLeast(b) => format!(">= {}", fmt_value(b)),
            Target::AtMost(b) => format!("<= {}", fmt_value(b)),
        }
    }
}

impl Figure {
    pub fn new(
        scenario: &str,
        metric: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> Figure {
        Figure {
            scenario: scenario.to_string(),
            metric: metric.into(),
            value,
            unit,
            target: None,
            note: String::new(),
        }
    }

    pub fn target(mut self, t: Target) -> Figure {
        self.target = Some(t);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Figure {
        self.note = note.into();
        self
    }

    pub fn key(&self) -> String {
        format!("{}.{}", self.scenario, self.metric)
    }
}

/// Median of the values (the mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The `q`-quantile (0..=1) of the values by nearest rank; NaN when empty.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// "min–max of n" for a note on repeated measurements.
pub fn spread(values: &[f64]) -> String {
    let v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.len() < 2 {
        return String::new();
    }
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{}–{} over {} runs", fmt_value(lo), fmt_value(hi), v.len())
}

pub fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        return "n/a".into();
    }
    let a = v.abs();
    if a >= 100.0 {
        let s = format!("{:.0}", v);
        // thousands separators for readability
        let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if a >= 10.0 {
        format!("{:.1}", v)
    } else {
        format!("{:.2}", v)
    }
}

/// The human-readable table for one scenario's figures.
pub fn table(title: &str, figures: &[Figure]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n== {title}");
    let w = figures
        .iter()
        .map(|f| f.metric.len())
        .max()
        .unwrap_or(0)
        .max(6);
    for f in figures {
        let value = format!("{} {}", fmt_value(f.value), f.unit);
        let target = match f.target {
            Some(t) if f.value.is_nan() => format!("target {} (not measured)", t.describe()),
            Some(t) if t.met(f.value) => format!("target {}: met", t.describe()),
            Some(t) => format!("target {}: MISSED", t.describe()),
            None => String::new(),
        };
        let _ = write!(out, "  {:<w$}  {:>16}", f.metric, value);
        if !target.is_empty() {
            let _ = write!(out, "  [{target}]");
        }
        if !f.note.is_empty() {
            let _ = write!(out, "  {}", f.note);
        }
        out.push('\n');
    }
    out
}

/// The final JSON line: every figure by key, plus `meta` (machine, versions, options).
pub fn json_line(figures: &[Figure], meta: Value) -> String {
    let mut m = Map::new();
    for f in figures {
        let value = if f.value.is_finite() {
            json!(f.value)
        } else {
            Value::Null
        };
        let mut entry = json!({ "value": value, "unit": f.unit });
        if let Some(t) = f.target {
            entry["target"] = json!(t.describe());
            entry["met"] = json!(f.value.is_finite() && t.met(f.value));
        }
        m.insert(f.key(), entry);
    }
    json!({ "meta": meta, "figures": Value::Object(m) }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_quantiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
    }

    #[test]
    fn values_are_readable() {
        assert_eq!(fmt_value(12345.6), "12,346");
        assert_eq!(fmt_value(-1234.0), "-1,234");
        assert_eq!(fmt_value(42.25), "42.2");
        assert_eq!(fmt_value(0.5), "0.50");
    }

    #[test]
    fn json_line_marks_targets() {
        let f = vec![
            Figure::new("e2e", "tps", 6000.0, "tasks/s").target(Target::AtLeast(5000.0)),
            Figure::new("e2e", "p99", f64::NAN, "ms").target(Target::AtMost(25.0)),
        ];
        let v: Value = serde_json::from_str(&json_line(&f, json!({}))).unwrap();
        assert_eq!(v["figures"]["e2e.tps"]["met"], json!(true));
        assert_eq!(v["figures"]["e2e.p99"]["met"], json!(false));
        assert_eq!(v["figures"]["e2e.p99"]["value"], Value::Null);
    }
}
