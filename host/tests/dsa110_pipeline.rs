//! The DSA-110 chains end to end: the `workflow` component runs `standard-pipeline` and
//! `quick-imaging` (as defined in deploy/absurd-host.toml's [workflows]) through real
//! `absurd-host worker` processes over the stage stand-ins of examples/dsa110 (native tasks on
//! absurd-native), with real CASA (examples/casa) for the two calibration stages.
//!
//! The CASA test needs the venv made by `scripts/setup-casa` (`$ABSURD_CASA_VENV`, default
//! `${XDG_CACHE_HOME:-$HOME/.cache}/absurd-host/venv-casa`); without it, it prints
//! "skipped: …" and passes (`ABSURD_REQUIRE_CASA=1` makes that a failure). The failure test
//! needs no CASA.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use absurd_client::{Client, State};
use common::{
    casa_or_skip, components_dir, repo_root, setup, temp_dir, temp_file, wait_for, WorkerProc,
};
use serde_json::{json, Value};
use uuid::Uuid;

const Q: &str = "dsa110";

/// A worker configuration modelled on deploy/absurd-host.toml: the `workflow` runner, every
/// stage of the chains as a native task on absurd-native running examples/dsa110/standins.py,
/// and the deploy file's four chains. With `casa`, the calibration stages run
/// examples/casa/calibrate.py through run-casa instead of the stdlib stand-ins.
fn config(casa: bool) -> PathBuf {
    let root = repo_root();
    let standins = root.join("examples/dsa110");
    let python_dir = root.join("python");
    let python = common::venv_bin("python");
    let run_casa = root.join("examples/casa/run-casa");
    let stage = |name: &str, function: &str| -> String {
        let on_casa = casa && name.starts_with("calibration-");
        if on_casa {
            format!(
                "[tasks.{name}]\nkind = \"native\"\nprogram = {run_casa:?}\n\
                 args = [\"-m\", \"absurd_native\", \"standins:{function}_casa\", \"{{params}}\", \"--noconfig\"]\n\
                 env = {{ PYTHONPATH = {standins:?} }}\ntimeout = 900\nmax_attempts = 3\n\n",
                run_casa = run_casa.display().to_string(),
                standins = standins.display().to_string(),
            )
        } else {
            format!(
                "[tasks.{name}]\nkind = \"native\"\nprogram = {python:?}\n\
                 args = [\"-B\", \"-m\", \"absurd_native\", \"standins:{function}\"]\n\
                 env = {{ PYTHONPATH = \"{standins}:{python_dir}\" }}\ntimeout = 300\nmax_attempts = 3\n\n",
                python = python.display().to_string(),
                standins = standins.display(),
                python_dir = python_dir.display(),
            )
        }
    };
    let stages = [
        ("catalog-setup", "catalog_setup"),
        ("convert-uvh5-to-ms", "convert_uvh5_to_ms"),
        ("calibration-solve", "calibration_solve"),
        ("calibration-apply", "calibration_apply"),
        ("imaging", "imaging"),
        ("validation", "validation"),
        ("crossmatch", "crossmatch"),
        ("photometry", "photometry"),
    ];
    let mut toml = String::from(
        "[native]\ngrace = 5\nkeep_workdir = \"on-failure\"\n\
         env = { CASA_LOGFILE = \"{workdir}/casa.log\", CASA_CACHEDIR = \"{workdir}/.casa-cache\", MPLCONFIGDIR = \"{workdir}/.mpl\", MPLBACKEND = \"Agg\", PYTHONUNBUFFERED = \"1\", OMP_NUM_THREADS = \"2\", OPENBLAS_NUM_THREADS = \"2\" }\n\
         env_remove = [\"DISPLAY\", \"PYTHONHOME\"]\n\n",
    );
    for (name, function) in stages {
        toml.push_str(&stage(name, function));
    }
    let names: Vec<String> = stages.iter().map(|(n, _)| format!("{n:?}")).collect();
    toml.push_str(&format!(
        "[tasks.workflow]\nkind = \"wasm\"\ncomponent = {:?}\ntimeout = 60\n\
         spawn_tasks = [\"*\", {}]\nspawn_queues = [\"*\"]\n\n",
        components_dir().join("workflow.wasm").display().to_string(),
        names.join(", ")
    ));
    // The chains, exactly as deploy/absurd-host.toml defines them.
    let deploy = std::fs::read_to_string(root.join("deploy/absurd-host.toml")).unwrap();
    let chains = &deploy[deploy
        .find("[workflows.standard-pipeline]")
        .expect("deploy/absurd-host.toml defines standard-pipeline")..];
    toml.push_str(chains);
    temp_file(
        if casa {
            "dsa110-casa.toml"
        } else {
            "dsa110.toml"
        },
        &toml,
    )
}

fn cli(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_absurd-host"))
        .args(args)
        .args(["--database-url", url])
        .env_remove("ABSURD_DATABASE_URL")
        .env_remove("ABSURD_QUEUE_NAME")
        .env_remove("ABSURD_HOST_CONFIG")
        .output()
        .unwrap()
}

fn ok_json(out: Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `absurd-host workflow start NAME --config CONFIG --inputs INPUTS`: the workflow task's id.
fn start_workflow(url: &str, config: &Path, name: &str, inputs: &Value) -> Uuid {
    let v = ok_json(cli(
        url,
        &[
            "workflow",
            "start",
            name,
            "--config",
            config.to_str().unwrap(),
            "--queue",
            Q,
            "--inputs",
            &inputs.to_string(),
            "--json",
        ],
    ));
    serde_json::from_value(v["task_id"].clone()).unwrap()
}

/// The stand-ins' log: one JSON object per stage call.
fn standin_log(stage_dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(stage_dir.join("standins.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn calls(log: &[Value], stage: &str) -> Vec<i64> {
    log.iter()
        .filter(|l| l["stage"] == stage)
        .map(|l| l["attempt"].as_i64().unwrap())
        .collect()
}

/// An input directory with two (empty) subband files, as the streaming bridge hands over.
fn input_dir(dir: &Path) -> PathBuf {
    let input = dir.join("incoming");
    std::fs::create_dir_all(&input).unwrap();
    for sb in ["sb00", "sb01"] {
        std::fs::write(input.join(format!("2025-10-17T14:40:09_{sb}.hdf5")), b"").unwrap();
    }
    input
}

async fn finished(client: &Client, id: Uuid, limit: Duration) -> absurd_client::TaskResult {
    common::terminal(client, Q, id, limit).await
}

#[tokio::test]
async fn standard_pipeline_with_real_casa_survives_a_worker_killed_mid_solve() {
    let Some(venv) =
        casa_or_skip("standard_pipeline_with_real_casa_survives_a_worker_killed_mid_solve")
    else {
        return;
    };
    let dir = temp_dir();
    // A simulated calibrator MS (examples/casa), which the convert stand-in copies into place.
    let template = dir.join("template/sim.ms");
    std::fs::create_dir_all(template.parent().unwrap()).unwrap();
    let sim = Command::new(repo_root().join("examples/casa/run-casa"))
        .args(["simulate_ms.py", "--out", template.to_str().unwrap()])
        .current_dir(template.parent().unwrap())
        .env("ABSURD_CASA_VENV", &venv)
        .output()
        .unwrap();
    assert!(
        sim.status.success(),
        "simulate_ms.py: {}\n{}",
        String::from_utf8_lossy(&sim.stdout),
        String::from_utf8_lossy(&sim.stderr)
    );
    let stage_dir = dir.join("stage");
    let inputs = json!({
        "input_path": input_dir(&dir),
        "output_dir": stage_dir,
        "start_time": "2025-10-17T14:40:09",
        "end_time": "2025-10-17T14:45:09",
        "template_ms": template,
        "calibration_params": {"field": "0", "refant": "DSA-000", "standin_hold_after": "solve-bandpass"},
    });

    let (db, client) = setup(Q).await;
    let config = config(true);
    // A short lease, so that the killed worker's run comes back soon.
    let worker_args = [
        "--queue",
        Q,
        "--dlq-enabled",
        "false",
        "--claim-timeout",
        "5",
    ];
    let mut first = WorkerProc::start(&db.url, &config, &worker_args);
    let wf = start_workflow(&db.url, &config, "standard-pipeline", &inputs);

    // calibration-solve holds on attempt 1 right after its bandpass checkpoint: kill the worker
    // there (SIGKILL: no draining, its reaper kills CASA).
    let hold = stage_dir.join("hold.solve-bandpass");
    wait_for(
        "calibration-solve to checkpoint its bandpass",
        Duration::from_secs(600),
        || async { hold.exists().then_some(()) },
    )
    .await;
    let solve_id: Uuid = {
        let log = standin_log(&stage_dir);
        let l = log
            .iter()
            .find(|l| l["stage"] == "calibration-solve")
            .expect("calibration-solve logged");
        serde_json::from_value(l["task_id"].clone()).unwrap()
    };
    let before = client.get_task(Q, solve_id).await.unwrap().unwrap();
    let checkpointed: Vec<&str> = before
        .checkpoints
        .iter()
        .map(|c| c.checkpoint_name.as_str())
        .collect();
    assert!(
        checkpointed.contains(&"solve-bandpass") && !checkpointed.contains(&"solve-gain"),
        "{checkpointed:?}"
    );
    first.signal(libc::SIGKILL);
    assert!(first.wait_exit(Duration::from_secs(30)).is_some());
    let first_log = first.log_text();
    drop(first);

    // A new worker: the lost run comes back after its lease, and the chain goes on.
    let second = WorkerProc::start(&db.url, &config, &worker_args);
    let r = finished(&client, wf, Duration::from_secs(900)).await;
    assert_eq!(
        r.state,
        State::Completed,
        "{r:?}\n---- first worker ----\n{first_log}\n---- second worker ----\n{}",
        second.log_text()
    );
    let result = r.result.unwrap();
    assert_eq!(result["state"], "completed", "{result}");
    let nodes = result["nodes"].as_array().unwrap();
    let order: Vec<&str> = nodes.iter().map(|n| n["task"].as_str().unwrap()).collect();
    assert_eq!(
        order,
        [
            "catalog-setup",
            "convert-uvh5-to-ms",
            "calibration-solve",
            "calibration-apply",
            "imaging",
            "validation",
            "crossmatch",
            "photometry"
        ]
    );
    assert!(nodes.iter().all(|n| n["state"] == "completed"), "{result}");

    // Each stage's outputs reached the next: the last one holds them all, and the files exist.
    let out = &nodes[7]["outputs"];
    let ms = PathBuf::from(out["ms_path"].as_str().unwrap());
    assert_eq!(
        ms,
        stage_dir.join("science/2025-10-17/2025-10-17T14:40:09.ms")
    );
    assert!(ms.join("table.dat").exists());
    assert_eq!(out["catalog_setup_status"], "ready");
    let tables: Vec<PathBuf> = out["calibration_tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| PathBuf::from(t.as_str().unwrap()))
        .collect();
    assert_eq!(tables.len(), 2, "{out}");
    for t in &tables {
        assert!(
            t.join("table.dat").exists(),
            "{} is a CASA table",
            t.display()
        );
    }
    let image = PathBuf::from(out["image_path"].as_str().unwrap());
    assert!(std::fs::read(&image).unwrap().starts_with(b"SIMPLE  ="));
    assert_eq!(out["validation_results"]["passed"], true);
    assert_eq!(out["crossmatch_results"]["n_matched"], 1);
    assert!(Path::new(out["photometry_results"]["csv_path"].as_str().unwrap()).exists());

    // The solve resumed: the bandpass is attempt 1's, untouched; only the gains were solved in
    // attempt 2; each checkpoint was written once.
    let solve = client.get_task(Q, solve_id).await.unwrap().unwrap();
    assert_eq!(solve.runs.len(), 2, "{:?}", solve.runs);
    let m = &solve.runs[1].result.as_ref().unwrap()["metrics"];
    assert_eq!(m["bandpass"]["attempt"], 1, "{m}");
    assert_eq!(m["gain"]["attempt"], 2, "{m}");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(tables[0].join("table.dat")).unwrap();
    assert_eq!(
        m["bandpass"]["table_dat_mtime_ns"].as_i64().unwrap() as i128,
        meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
        "the bandpass table was not written again"
    );
    let mut names: Vec<&str> = solve
        .checkpoints
        .iter()
        .map(|c| c.checkpoint_name.as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["model", "solve-bandpass", "solve-gain"]);
    // Every other stage ran once; calibration-solve in attempts 1 and 2.
    let log = standin_log(&stage_dir);
    assert_eq!(calls(&log, "calibration-solve"), [1, 2]);
    for stage in [
        "catalog-setup",
        "convert-uvh5-to-ms",
        "calibration-apply",
        "imaging",
        "validation",
        "crossmatch",
        "photometry",
    ] {
        assert_eq!(calls(&log, stage), [1], "{stage}: {log:?}");
    }
    drop(second);
}

#[tokio::test]
async fn quick_imaging_with_a_failing_stage_fails_the_workflow() {
    let dir = temp_dir();
    let stage_dir = dir.join("stage");
    // Existing calibration, as quick-imaging expects (stand-in tables).
    let bp = dir.join("cal/2025-10-17T02:00:00_0_bpcal");
    std::fs::create_dir_all(&bp).unwrap();
    let inputs = json!({
        "input_path": input_dir(&dir),
        "output_dir": stage_dir,
        "start_time": "2025-10-17T14:40:09",
        "end_time": "2025-10-17T14:45:09",
        "calibration_tables": [bp],
        "standin_fail": "imaging",
    });
    let (db, client) = setup(Q).await;
    let config = config(false);
    let w = WorkerProc::start(&db.url, &config, &["--queue", Q, "--dlq-enabled", "false"]);
    let wf = start_workflow(&db.url, &config, "quick-imaging", &inputs);
    let r = finished(&client, wf, Duration::from_secs(300)).await;
    assert_eq!(r.state, State::Failed, "{r:?}\n{}", w.log_text());
    let f = r.failure_reason.unwrap();
    assert_eq!(f["name"], "$WorkflowNodeFailed", "{f}");
    let msg = f["message"].as_str().unwrap();
    assert!(
        msg.contains("\"imaging\"") && msg.contains("stand-in failure requested for imaging"),
        "{f}"
    );
    let details = &f["details"];
    assert_eq!(details["node"], "imaging", "{f}");
    let states: Vec<(&str, &str)> = details["workflow"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        [
            ("convert-uvh5-to-ms", "completed"),
            ("calibration-apply", "completed"),
            ("imaging", "failed")
        ]
    );
    // The failure is permanent: imaging ran once, despite max_attempts = 3.
    let imaging: Uuid =
        serde_json::from_value(details["workflow"]["nodes"][2]["task_id"].clone()).unwrap();
    let t = client.get_task(Q, imaging).await.unwrap().unwrap();
    assert_eq!(t.runs.len(), 1, "{:?}", t.runs);
    assert_eq!(calls(&standin_log(&stage_dir), "imaging"), [1]);
    // The stages before it did their work.
    assert!(stage_dir
        .join("science/2025-10-17/2025-10-17T14:40:09.ms/STANDIN_CORRECTED_DATA.json")
        .exists());
    assert!(!stage_dir.join("images").exists());

    // `workflow show` tells the same.
    let shown = ok_json(cli(
        &db.url,
        &["workflow", "show", &wf.to_string(), "--json"],
    ));
    assert_eq!(shown["status"], "failed", "{shown}");
    assert!(
        shown["error"]
            .as_str()
            .is_some_and(|e| e.contains("stand-in failure requested for imaging")),
        "{shown}"
    );
    let imaging_node = shown["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "imaging")
        .unwrap();
    assert_eq!(imaging_node["state"], "failed", "{shown}");
    drop(w);
}
