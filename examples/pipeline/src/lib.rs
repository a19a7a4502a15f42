//! `pipeline`: a DSA-110-shaped `calibration-plan` task.
//!
//! Params follow the pipeline's convention
//! `{"config": <object | YAML path | null>, "inputs": {...}, "outputs": {...}}`:
//!
//! - `inputs.ms_path` (string ending in `.ms`, required)
//! - `inputs.calibration_params` (object, optional): `field` and `refant` (string or integer,
//!   defaults `"0"` and `"103"`), `solve_delay` / `solve_bandpass` / `solve_gains` (booleans,
//!   defaults false / true / true), `gain_solint` (string, default `"inf"`), `gain_calmode`
//!   (`"p"` | `"ap"`, default `"ap"`), `bp_minsnr` / `gain_minsnr` (numbers > 0, defaults 5
//!   and 3); other keys are passed through
//! - `outputs` (object, optional): the previous chain task's outputs
//! - `chain_name` (string, optional, default `"calibrator"`), `next_task` (string, optional,
//!   default `"calibration-solve"`)
//!
//! Anything else wrong fails permanently with `$InvalidParams`, naming the field.
//!
//! The task computes a calibration plan in the checkpointed step `plan`, then spawns the next
//! task of the chain with `{config, inputs, outputs: <outputs + plan>, chain_name}` and an
//! idempotency key derived from this task's id, and returns
//! `{"status": "success", "outputs", "chain_next_task", "chain_next_task_id", "message"}`.

use absurd_guest::{Context, SpawnOptions, TaskError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

#[derive(Deserialize)]
struct Params {
    #[serde(default)]
    config: Value,
    inputs: Inputs,
    #[serde(default)]
    outputs: Option<Value>,
    chain_name: Option<String>,
    next_task: Option<String>,
}

struct Inputs {
    ms_path: String,
    calibration_params: Option<Map<String, Value>>,
    /// Other inputs, passed on to the next task unchanged.
    rest: Map<String, Value>,
}

// Written by hand rather than with `#[serde(flatten)]` for `rest`: flatten makes serde buffer
// the object, and errors inside it could then no longer be traced to the offending field.
impl<'de> Deserialize<'de> for Inputs {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Inputs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object with `ms_path`")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Inputs, A::Error> {
                let (mut ms_path, mut calibration_params, mut rest) = (None, None, Map::new());
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "ms_path" => ms_path = Some(map.next_value::<String>()?),
                        "calibration_params" => calibration_params = map.next_value()?,
                        _ => {
                            rest.insert(key, map.next_value()?);
                        }
                    }
                }
                let ms_path = ms_path.ok_or_else(|| serde::de::Error::missing_field("ms_path"))?;
                Ok(Inputs {
                    ms_path,
                    calibration_params,
                    rest,
                })
            }
        }
        de.deserialize_map(V)
    }
}

/// The plan computed by the `plan` step (stored as its checkpoint).
#[derive(Serialize, Deserialize, Clone)]
struct Plan {
    ms_path: String,
    field: String,
    refant: String,
    table_prefix: String,
    lock_path: String,
    solves: Vec<String>,
    calibration_tables: Vec<String>,
    gain_solint: String,
    gain_calmode: String,
    bp_minsnr: f64,
    gain_minsnr: f64,
}

#[derive(Serialize)]
struct Outcome {
    status: &'static str,
    outputs: Value,
    chain_next_task: String,
    chain_next_task_id: String,
    message: String,
}

const CP: &str = "inputs.calibration_params";

/// A string-or-integer identifier (`field`, `refant`), as the pipeline accepts both.
fn ident(value: Option<&Value>, path: &str, default: &str) -> Result<String, TaskError> {
    match value {
        None | Some(Value::Null) => Ok(default.to_string()),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Some(Value::Number(n)) if n.is_u64() => Ok(n.to_string()),
        Some(other) => Err(TaskError::invalid_params(
            path,
            format!("expected a non-empty string or a non-negative integer, got {other}"),
        )),
    }
}

fn positive(value: Option<f64>, path: &str, default: f64) -> Result<f64, TaskError> {
    match value {
        None => Ok(default),
        Some(v) if v.is_finite() && v > 0.0 => Ok(v),
        Some(v) => Err(TaskError::invalid_params(
            path,
            format!("must be a positive number, got {v}"),
        )),
    }
}

/// `inputs.calibration_params.<key>` decoded as `T`, or `$InvalidParams` naming it.
fn cp_get<T: serde::de::DeserializeOwned>(
    cp: &Map<String, Value>,
    key: &str,
) -> Result<Option<T>, TaskError> {
    match cp.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => T::deserialize(v)
            .map(Some)
            .map_err(|e| TaskError::invalid_params(&format!("{CP}.{key}"), e)),
    }
}

fn make_plan(inputs: &Inputs) -> Result<Plan, TaskError> {
    let ms_path = inputs.ms_path.trim_end_matches('/').to_string();
    let stem = ms_path
        .strip_suffix(".ms")
        .filter(|s| !s.is_empty() && !s.ends_with('/'))
        .ok_or_else(|| {
            TaskError::invalid_params(
                "inputs.ms_path",
                format!(
                    "must name a measurement set ending in .ms, got {:?}",
                    inputs.ms_path
                ),
            )
        })?;
    let empty = Map::new();
    let cp = inputs.calibration_params.as_ref().unwrap_or(&empty);
    let field = ident(cp.get("field"), &format!("{CP}.field"), "0")?;
    let refant = ident(cp.get("refant"), &format!("{CP}.refant"), "103")?;
    let gain_calmode = cp_get::<String>(cp, "gain_calmode")?.unwrap_or_else(|| "ap".into());
    if gain_calmode != "p" && gain_calmode != "ap" {
        return Err(TaskError::invalid_params(
            &format!("{CP}.gain_calmode"),
            format!("must be \"p\" or \"ap\", got {gain_calmode:?}"),
        ));
    }
    let gain_solint = cp_get::<String>(cp, "gain_solint")?.unwrap_or_else(|| "inf".into());
    if gain_solint.trim().is_empty() {
        return Err(TaskError::invalid_params(
            &format!("{CP}.gain_solint"),
            "must not be empty",
        ));
    }
    let bp_minsnr = positive(cp_get(cp, "bp_minsnr")?, &format!("{CP}.bp_minsnr"), 5.0)?;
    let gain_minsnr = positive(
        cp_get(cp, "gain_minsnr")?,
        &format!("{CP}.gain_minsnr"),
        3.0,
    )?;
    let solve_delay = cp_get::<bool>(cp, "solve_delay")?.unwrap_or(false);
    let solve_bandpass = cp_get::<bool>(cp, "solve_bandpass")?.unwrap_or(true);
    let solve_gains = cp_get::<bool>(cp, "solve_gains")?.unwrap_or(true);

    let table_prefix = format!("{stem}_{field}");
    let mut solves = Vec::new();
    let mut tables = Vec::new();
    if solve_delay {
        solves.push("delay".to_string());
        tables.push(format!("{table_prefix}_kcal"));
    }
    if solve_bandpass {
        solves.push("bandpass".to_string());
        tables.push(format!("{table_prefix}_bpcal"));
    }
    if solve_gains {
        solves.push("gains".to_string());
        tables.push(format!("{table_prefix}_gpcal"));
    }
    if solves.is_empty() {
        return Err(TaskError::invalid_params(
            CP,
            "solve_delay, solve_bandpass and solve_gains are all false: nothing to solve",
        ));
    }
    let (dir, file_stem) = match stem.rsplit_once('/') {
        Some((dir, file)) => (if dir.is_empty() { "/" } else { dir }, file),
        None => (".", stem),
    };
    let lock_path = format!("{}/.{file_stem}.cal_lock", dir.trim_end_matches('/'));
    Ok(Plan {
        ms_path,
        field,
        refant,
        table_prefix,
        lock_path,
        solves,
        calibration_tables: tables,
        gain_solint,
        gain_calmode,
        bp_minsnr,
        gain_minsnr,
    })
}

fn calibration_plan(ctx: &Context, params: Params) -> Result<Outcome, TaskError> {
    match &params.config {
        Value::Null | Value::Object(_) => {}
        Value::String(s) if !s.is_empty() => {}
        other => {
            return Err(TaskError::invalid_params(
                "config",
                format!("expected an object, a YAML path (string) or null, got {other}"),
            ))
        }
    }
    let previous = match params.outputs {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        Some(other) => {
            return Err(TaskError::invalid_params(
                "outputs",
                format!("expected an object, got {other}"),
            ))
        }
    };
    let next_task = params
        .next_task
        .clone()
        .unwrap_or_else(|| "calibration-solve".into());
    if next_task.trim().is_empty() {
        return Err(TaskError::invalid_params("next_task", "must not be empty"));
    }
    let chain_name = params
        .chain_name
        .clone()
        .unwrap_or_else(|| "calibrator".into());

    // Validate before the step so bad params fail permanently on every attempt alike.
    let plan = make_plan(&params.inputs)?;
    let plan = ctx.step("plan", || {
        absurd_guest::info!(
            "calibration-plan: {} solves {:?} with refant {}",
            plan.ms_path,
            plan.solves,
            plan.refant
        );
        Ok(plan)
    })?;

    let mut outputs = previous;
    outputs.insert("ms_path".into(), json!(plan.ms_path));
    outputs.insert("calibration_tables".into(), json!(plan.calibration_tables));
    outputs.insert("calibration_plan".into(), serde_json::to_value(&plan)?);
    let outputs = Value::Object(outputs);

    let mut inputs = params.inputs.rest.clone();
    inputs.insert("ms_path".into(), json!(params.inputs.ms_path));
    if let Some(cp) = &params.inputs.calibration_params {
        inputs.insert("calibration_params".into(), Value::Object(cp.clone()));
    }

    let next_params = json!({
        "config": params.config,
        "inputs": inputs,
        "outputs": outputs,
        "chain_name": chain_name,
    });
    let info = ctx.info();
    let options = SpawnOptions::new()
        .idempotency_key(format!("{}:{}:{}", info.task_id, info.task_name, next_task))
        .headers(json!({ "chain_name": chain_name, "chain_parent_task_id": info.task_id }));
    let next_id = ctx.spawn(&next_task, &next_params, options)?;
    absurd_guest::info!("calibration-plan: spawned {next_task} as {next_id}");

    Ok(Outcome {
        status: "success",
        message: format!(
            "planned {} calibration table(s) for {}",
            plan.calibration_tables.len(),
            plan.ms_path
        ),
        outputs,
        chain_next_task: next_task,
        chain_next_task_id: next_id,
    })
}

absurd_guest::export_task!(calibration_plan);
