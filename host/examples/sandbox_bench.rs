//! The sandbox part of the benchmark suite, on its own (a thin wrapper around
//! `absurd_host::bench::sandbox::run`; it prints figures and asserts nothing).
//!
//!     scripts/build-examples
//!     cargo run --release -p absurd-host --example sandbox_bench -- [--quick] [--reps N] [COMPONENTS_DIR]
//!
//! COMPONENTS_DIR defaults to what `scripts/build-examples` prints. The last line of output
//! is the figures as one JSON object.

use std::path::PathBuf;

use absurd_host::bench::report;
use absurd_host::bench::sandbox::{run, SandboxBenchOptions};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut quick = false;
    let mut reps = 3;
    let mut dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--reps" => {
                reps = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--reps needs a number"))?
                    .parse()?
            }
            _ if a.starts_with("--") => anyhow::bail!("unknown option {a}"),
            _ => dir = Some(PathBuf::from(a)),
        }
    }
    let components_dir = match dir {
        Some(d) => d,
        None => {
            let script =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-examples");
            let out = std::process::Command::new(&script).output()?;
            anyhow::ensure!(out.status.success(), "{} failed", script.display());
            PathBuf::from(String::from_utf8(out.stdout)?.trim())
        }
    };
    let opts = SandboxBenchOptions {
        components_dir,
        quick,
        reps,
    };
    let figures = run(&opts).await?;
    for scenario in ["sandbox", "timeout"] {
        let mine: Vec<_> = figures
            .iter()
            .filter(|f| f.scenario == scenario)
            .cloned()
            .collect();
        print!("{}", report::table(scenario, &mine));
    }
    let meta = json!({
        "quick": quick,
        "reps": reps,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
    });
    println!("{}", report::json_line(&figures, meta));
    Ok(())
}
