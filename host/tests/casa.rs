//! Real CASA calibration through the queue: examples/casa run by the `native` handler kind.
//!
//! Needs the CASA venv made by `scripts/setup-casa` (`$ABSURD_CASA_VENV`, default
//! `${XDG_CACHE_HOME:-$HOME/.cache}/absurd-host/venv-casa`). Without it the test prints
//! "skipped: …" and passes; set `ABSURD_REQUIRE_CASA=1` to make a missing venv a failure.

mod common;
use common::no_backoff as opts;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use absurd_client::{Client, State, TaskResult};
use common::{casa_or_skip, repo_root, wait_for, TestDb, WorkerProc};
use serde_json::{json, Value};
use uuid::Uuid;

fn example_dir() -> PathBuf {
    repo_root().join("examples/casa")
}

/// Runs one of the example scripts with the venv's Python in `cwd`; returns its RESULT line.
fn run_script(venv: &Path, cwd: &Path, args: &[&str]) -> Value {
    let out = Command::new(example_dir().join("run-casa"))
        .args(args)
        .current_dir(cwd)
        .env("ABSURD_CASA_VENV", venv)
        .output()
        .expect("run run-casa");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line from {args:?}:\n{stdout}"));
    serde_json::from_str(line).unwrap()
}

async fn run_task(client: &Client, task: &str, params: Value, attempts: i32) -> (Uuid, TaskResult) {
    let id = client
        .spawn("dsa110", task, &params, &opts(attempts))
        .await
        .unwrap()
        .task_id;
    let r = wait_for(
        &format!("{task} to finish"),
        Duration::from_secs(300),
        || async {
            client
                .task_result("dsa110", id)
                .await
                .unwrap()
                .filter(|r| r.state.is_terminal())
        },
    )
    .await;
    (id, r)
}

fn table_rows(venv: &Path, cwd: &Path, table: &str) -> i64 {
    let out = Command::new(venv.join("bin/python"))
        .args(["-B", "-c"])
        .arg(format!(
            "import sys; sys.path.insert(0, {dir:?}); import casa_env; casa_env.prepare(); import casatools; t = casatools.table(); t.open({table:?}); print('ROWS', t.nrows())",
            dir = example_dir().display().to_string()
        ))
        .current_dir(cwd)
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    s.lines()
        .find_map(|l| l.strip_prefix("ROWS "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "cannot count rows of {table}: {s}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

#[tokio::test]
async fn casa_calibration_solve_then_apply_through_the_queue() {
    let Some(venv) = casa_or_skip("casa_calibration_solve_then_apply_through_the_queue") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("absurd-casa-test-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let ms = dir.join("sim.ms");
    let sim = run_script(
        &venv,
        &dir,
        &["simulate_ms.py", "--out", ms.to_str().unwrap()],
    );
    assert_eq!(sim["rows"], 270, "{sim}");

    // A partial table from an "earlier failed attempt": the solve must start from a clean slate.
    let stale = dir.join("sim_0_bpcal");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("junk"), "partial table of a failed attempt").unwrap();

    let db = TestDb::migrated().await;
    let client = Client::new(db.pool.clone());
    client.create_queue("dsa110").await.unwrap();
    // The worker inherits this environment: run-casa finds the venv as casa_venv() does.
    let w = WorkerProc::start(
        &db.url,
        &example_dir().join("absurd-host.toml"),
        &["--queue", "dsa110", "--dlq-enabled", "false"],
    );

    // calibration-solve: bandpass + phase-only gains.
    let (_, r) = run_task(
        &client,
        "calibration-solve",
        json!({"config": null, "inputs": {"ms_path": ms, "calibration_params": {"field": "0", "refant": "DSA-000"}}, "outputs": {}}),
        1,
    )
    .await;
    assert_eq!(r.state, State::Completed, "{r:?}\n{}", w.log_text());
    let solved = r.result.unwrap();
    assert_eq!(solved["status"], "success", "{solved}");
    let tables: Vec<String> = solved["outputs"]["calibration_tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        tables,
        vec![
            dir.join("sim_0_bpcal").display().to_string(),
            dir.join("sim_0_gpcal").display().to_string()
        ]
    );
    assert!(
        !stale.join("junk").exists(),
        "the stale partial table was removed before solving"
    );
    for t in &tables {
        assert!(Path::new(t).join("table.dat").exists(), "{t} exists");
        assert!(table_rows(&venv, &dir, t) > 0, "{t} has rows");
    }
    assert_eq!(solved["metrics"]["bandpass"]["viscal"], "B Jones");
    assert_eq!(solved["metrics"]["gain"]["viscal"], "G Jones");
    assert!(
        dir.join(".sim.cal_lock").exists(),
        "the per-MS lock file was used"
    );

    // calibration-apply, chained DSA-110 style: the solve's outputs become the apply's outputs.
    let (_, r) = run_task(
        &client,
        "calibration-apply",
        json!({"config": null, "inputs": {}, "outputs": solved["outputs"]}),
        1,
    )
    .await;
    assert_eq!(r.state, State::Completed, "{r:?}\n{}", w.log_text());
    let applied = r.result.unwrap();
    assert_eq!(applied["status"], "success", "{applied}");

    // Corrected amplitudes match the 1 Jy model; DATA was visibly corrupted.
    let s = run_script(&venv, &dir, &["inspect_ms.py", ms.to_str().unwrap()]);
    eprintln!("calibrated MS: {s}");
    let c = &s["corrected"];
    let amp = c["amp_mean"].as_f64().unwrap();
    assert!(
        (amp - 1.0).abs() < 0.03,
        "corrected amplitude {amp}, model 1 Jy: {s}"
    );
    assert!(c["amp_std"].as_f64().unwrap() < 0.05, "{s}");
    assert!(c["phase_rms_deg"].as_f64().unwrap() < 3.0, "{s}");
    assert!(
        s["data"]["phase_rms_deg"].as_f64().unwrap() > 10.0,
        "the corruption happened: {s}"
    );
    assert!(s["flagged_fraction"].as_f64().unwrap() < 0.5, "{s}");

    // A solve whose params cannot work fails permanently with the script's message, and
    // leaves no table behind.
    let (id, r) = run_task(
        &client,
        "calibration-solve",
        json!({"config": null, "inputs": {"ms_path": ms, "calibration_params": {"refant": "NOPE", "field": "0"}}, "outputs": {}}),
        3,
    )
    .await;
    assert_eq!(r.state, State::Failed);
    let f = r.failure_reason.unwrap();
    assert_eq!(f["name"], "$TaskReportedError", "{f}");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("reference antenna 'NOPE'"),
        "{f}"
    );
    assert_eq!(
        client
            .get_task("dsa110", id)
            .await
            .unwrap()
            .unwrap()
            .runs
            .len(),
        1
    );

    // The MS is never deleted.
    assert!(ms.join("table.dat").exists());
    drop(w);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn casa_calibration_solve_resumes_after_its_last_completed_table() {
    let Some(venv) = casa_or_skip("casa_calibration_solve_resumes_after_its_last_completed_table")
    else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("absurd-casa-resume-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let ms = dir.join("sim.ms");
    run_script(
        &venv,
        &dir,
        &["simulate_ms.py", "--out", ms.to_str().unwrap()],
    );

    // calibrate:solve, killed (SIGKILL) on attempt 1 right after the bandpass checkpoint.
    let fixtures = repo_root().join("host/tests/fixtures/native");
    let config = common::temp_file(
        "absurd-host.toml",
        &format!(
            r#"
[native]
grace = 10
env = {{ CASA_LOGFILE = "{{workdir}}/casa.log", MPLBACKEND = "Agg", PYTHONUNBUFFERED = "1", OMP_NUM_THREADS = "2", PYTHONPATH = "{fixtures}" }}

[tasks.calibration-solve]
kind = "native"
program = "{run_casa}"
args = ["-m", "absurd_native", "casa_crash:solve", "{{params}}", "--noconfig"]
timeout = 600
max_attempts = 2
"#,
            fixtures = fixtures.display(),
            run_casa = example_dir().join("run-casa").display(),
        ),
    );
    let db = TestDb::migrated().await;
    let client = Client::new(db.pool.clone());
    client.create_queue("dsa110").await.unwrap();
    let w = WorkerProc::start(
        &db.url,
        &config,
        &["--queue", "dsa110", "--dlq-enabled", "false"],
    );
    let (id, r) = run_task(
        &client,
        "calibration-solve",
        json!({"config": null, "inputs": {"ms_path": ms, "calibration_params": {"field": "0", "refant": "DSA-000", "crash_after": "solve-bandpass"}}, "outputs": {}}),
        2,
    )
    .await;
    assert_eq!(r.state, State::Completed, "{r:?}\n{}", w.log_text());
    let solved = r.result.unwrap();
    let m = &solved["metrics"];
    // The bandpass table is attempt 1's, untouched since; only the gains were solved again.
    assert_eq!(m["bandpass"]["attempt"], 1, "{solved}");
    assert_eq!(m["gain"]["attempt"], 2, "{solved}");
    let bp = dir.join("sim_0_bpcal");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(bp.join("table.dat")).unwrap();
    let mtime_ns = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
    assert_eq!(
        m["bandpass"]["table_dat_mtime_ns"].as_i64().unwrap() as i128,
        mtime_ns,
        "the bandpass table was not written again"
    );
    assert!(table_rows(&venv, &dir, dir.join("sim_0_gpcal").to_str().unwrap()) > 0);
    let task = client.get_task("dsa110", id).await.unwrap().unwrap();
    assert_eq!(task.runs.len(), 2);
    assert_eq!(
        task.runs[0].failure_reason.as_ref().unwrap()["name"],
        "$ProgramKilled"
    );
    let names: Vec<&str> = task
        .checkpoints
        .iter()
        .map(|c| c.checkpoint_name.as_str())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for n in ["model", "solve-bandpass", "solve-gain"] {
        assert!(names.contains(&n), "{names:?}");
    }
    drop(w);
    let _ = std::fs::remove_dir_all(&dir);
}
