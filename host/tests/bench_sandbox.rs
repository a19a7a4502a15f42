//! The sandbox benchmark runs end to end in quick mode and yields a finite number for every
//! metric. Behaviour only: no figure is compared with its target here.

mod common;

use absurd_host::bench::sandbox::{run, SandboxBenchOptions};

#[tokio::test]
async fn quick_sandbox_benchmark_yields_every_figure() {
    let opts = SandboxBenchOptions {
        components_dir: common::components_dir(),
        quick: true,
        reps: 1,
    };
    let figures = run(&opts).await.expect("the sandbox benchmark runs");
    let keys: Vec<String> = figures.iter().map(|f| f.key()).collect();
    for expected in [
        "sandbox.run.noop.pooling.p50",
        "sandbox.run.noop.pooling.p99",
        "sandbox.run.noop.on_demand.p50",
        "sandbox.run.noop.on_demand.p99",
        "sandbox.run.echo.pooling.p50",
        "sandbox.run.echo.pooling.p99",
        "sandbox.run.echo.on_demand.p50",
        "sandbox.run.echo.on_demand.p99",
        "sandbox.load.noop.p50",
        "sandbox.load.echo.p50",
        "sandbox.cpu.none.ms_per_run",
        "sandbox.cpu.epoch.ms_per_run",
        "sandbox.cpu.fuel.ms_per_run",
        "sandbox.cpu.epoch.overhead",
        "sandbox.cpu.fuel.overhead",
        "timeout.spin.median_overshoot",
        "timeout.spin.max_overshoot",
        "timeout.blocked.median_overshoot",
        "timeout.blocked.max_overshoot",
        "timeout.native.median_overshoot",
        "timeout.native.max_overshoot",
    ] {
        assert!(
            keys.iter().any(|k| k == expected),
            "no {expected} in {keys:?}"
        );
    }
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), keys.len(), "duplicate metrics in {keys:?}");
    for f in &figures {
        assert!(f.value.is_finite(), "{} is {}", f.key(), f.value);
        if f.unit != "%" {
            // Overheads may come out below zero on a noisy machine; times may not (an
            // overshoot is measured from the deadline, so it is at least about zero).
            assert!(f.value > -5.0, "{} is {}", f.key(), f.value);
        }
    }
    let targeted = |k: &str| {
        figures
            .iter()
            .find(|f| f.key() == k)
            .unwrap()
            .target
            .is_some()
    };
    assert!(targeted("sandbox.run.noop.pooling.p50"));
    assert!(targeted("timeout.native.max_overshoot"));
}
