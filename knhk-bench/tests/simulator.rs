//! The simulator in CI: a smoke run of every scenario, determinism, and many seeds of
//! partition-and-heal. Every bound is on virtual time, never wall time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use knhk_bench::network::LatencyModel;
use knhk_bench::scenario::{Report, RunConfig, Scenario, run};

fn quick(scenario: Scenario, nodes: usize, seed: u64) -> RunConfig {
    RunConfig {
        nodes,
        seed,
        scenario,
        idle_ms: 500,
        deadline_ms: 60_000,
        ..RunConfig::default()
    }
}

fn json_without_wall_figures(report: &Report) -> serde_json::Value {
    let mut value = serde_json::to_value(report).unwrap();
    let object = value.as_object_mut().unwrap();
    object.remove("wall_ms");
    object.remove("peak_rss_bytes");
    object.remove("rss_bytes_per_node");
    value
}

#[test]
fn every_scenario_converges_at_a_thousand_nodes() {
    for scenario in [
        Scenario::Broadcast,
        Scenario::ConcurrentWrites,
        Scenario::Partition,
        Scenario::Churn,
        Scenario::Byzantine,
    ] {
        let report = run(&quick(scenario, 1_000, 7), &mut |_| {});
        assert!(report.converged, "{} did not converge", scenario.name());
        let coverage = report.coverage.last().unwrap().1;
        assert!(
            (coverage - 1.0).abs() < f64::EPSILON,
            "{}: final coverage {coverage}",
            scenario.name()
        );
        assert!(report.messages_total > 0);
        if scenario == Scenario::Byzantine {
            assert!(
                report.byzantine_rejected > 0,
                "Byzantine frames were refused"
            );
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_report() {
    let config = RunConfig {
        latency: LatencyModel::Pareto {
            scale_ms: 1.0,
            shape: 1.5,
        },
        loss: 0.01,
        max_clock_skew_ms: 500,
        regions: true,
        ..quick(Scenario::Broadcast, 200, 42)
    };
    let first = json_without_wall_figures(&run(&config, &mut |_| {}));
    let second = json_without_wall_figures(&run(&config, &mut |_| {}));
    assert_eq!(first, second);
    let other = json_without_wall_figures(&run(&RunConfig { seed: 43, ..config }, &mut |_| {}));
    assert_ne!(first, other, "a different seed changes the run");
}

#[test]
fn fifty_seeds_of_partition_and_heal_all_converge_to_one_root() {
    for seed in 0..50 {
        let config = RunConfig {
            latency: LatencyModel::Uniform {
                min_ms: 1.0,
                max_ms: 20.0,
            },
            loss: 0.02,
            idle_ms: 0,
            ..quick(Scenario::Partition, 20, seed)
        };
        let report = run(&config, &mut |_| {});
        assert!(report.converged, "seed {seed} did not converge: {report:?}");
    }
}

#[test]
fn the_stand_in_crypto_changes_the_cost_and_nothing_else() {
    use knhk_bench::crypto::CryptoMode;
    let config = quick(Scenario::Byzantine, 300, 3);
    let real = run(&config, &mut |_| {});
    let stand_in = run(
        &RunConfig {
            crypto: CryptoMode::Sim,
            ..config
        },
        &mut |_| {},
    );
    assert_eq!((real.crypto, stand_in.crypto), ("ed25519", "sim"));
    assert!(real.converged && stand_in.converged);
    assert!(stand_in.byzantine_rejected > 0);
    // Same seed, same 64-byte signatures, same decisions: the same run.
    assert_eq!(real.byzantine_rejected, stand_in.byzantine_rejected);
    assert_eq!(real.convergence_us, stand_in.convergence_us);
    assert_eq!(real.messages_total, stand_in.messages_total);
    assert_eq!(real.coverage, stand_in.coverage);
    // The whole report is the same apart from the crypto's name, the signature cache
    // (the stand-in keeps none) and the wall-clock and process figures.
    assert!(real.signature_cache_bytes_per_node > 0);
    assert_eq!(stand_in.signature_cache_bytes_per_node, 0);
    let strip = |report: &Report| {
        let mut value = json_without_wall_figures(report);
        let object = value.as_object_mut().unwrap();
        object.remove("crypto");
        object.remove("signature_cache_bytes_per_node");
        value
    };
    assert_eq!(strip(&real), strip(&stand_in));
}

#[test]
fn bad_arguments_get_one_line_and_exit_code_2() {
    let binary = env!("CARGO_BIN_EXE_knhk-sim");
    for args in [
        &["--nodes", "0"][..],
        &["--nodes", "3", "--fanout", "3"],
        &["--loss", "1.5"],
        &["--latency", "gauss:1"],
        &["--scenario", "nope"],
    ] {
        let output = std::process::Command::new(binary)
            .args(args)
            .arg("--quiet")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.trim().is_empty(), "{args:?}: no message");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
}

#[test]
fn what_a_node_remembers_does_not_grow_with_the_length_of_the_run() {
    use knhk_bench::crypto::CryptoMode;
    use knhk_bench::sim::{SimConfig, Simulator};
    use knhk_gossip::GossipConfig;
    // The replay window holds what was accepted within the clock-skew window; a short
    // window lets a short run reach its plateau.
    let validator = knhk_security::ValidatorConfig {
        max_clock_skew: std::time::Duration::from_secs(2),
        ..Default::default()
    };
    let mut sim = Simulator::new(SimConfig {
        nodes: 200,
        crypto: CryptoMode::Sim,
        gossip: GossipConfig::default(),
        validator,
        ..SimConfig::default()
    });
    sim.put(0, "k", b"v".to_vec()).unwrap();
    let mut samples = Vec::new();
    // 24 virtual seconds, 240 rounds: every node hears from nearly every other.
    sim.run_for(24_000, 4_000, |sim| {
        let most_senders = (0..sim.len())
            .map(|i| sim.endpoint(i).validator().stats().tracked_senders)
            .max()
            .unwrap();
        let most_bytes = (0..sim.len())
            .map(|i| sim.endpoint(i).approx_memory_bytes())
            .max()
            .unwrap();
        samples.push((most_senders, most_bytes));
    });
    assert!(sim.live_roots_agree());
    // Senders heard in about the last second, not the whole membership.
    assert!(
        samples.iter().all(|(senders, _)| *senders < 100),
        "{samples:?}"
    );
    // Past the skew window, memory is flat.
    let (plateau, last) = (samples[1].1, samples[samples.len() - 1].1);
    assert!(last <= plateau + plateau / 5, "memory grew: {samples:?}");
}

#[test]
fn a_second_layer_runs_in_the_simulator_with_no_change_to_it() {
    use knhk_bench::crypto::CryptoMode;
    use knhk_bench::network::{LatencyModel, NetworkConfig};
    use knhk_bench::sim::{SimConfig, Simulator};
    use knhk_endpoint::LayerHandle;
    use knhk_endpoint::probe::PingLayer;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    let handles: Arc<Mutex<Vec<LayerHandle<PingLayer>>>> = Arc::default();
    let recorded = handles.clone();
    let mut sim = Simulator::with_layers(
        SimConfig {
            nodes: 50,
            crypto: CryptoMode::Sim,
            network: NetworkConfig {
                latency: LatencyModel::Constant { ms: 4.0 },
                ..NetworkConfig::default()
            },
            ..SimConfig::default()
        },
        Box::new(move |endpoint, _| {
            let probe = PingLayer::new(Duration::from_millis(50));
            let handle = endpoint
                .add_layer(knhk_types::Scope::DEFAULT, probe)
                .unwrap();
            recorded.lock().unwrap().push(handle);
        }),
    );
    sim.put(0, "k", b"v".to_vec()).unwrap();
    sim.run_for(2_000, 100, |_| {});
    assert!(
        sim.live_roots_agree(),
        "gossip still converges beside the probe"
    );
    let handles = handles.lock().unwrap();
    for i in 0..sim.len() {
        let probe = sim.endpoint(i).layer(handles[i]).unwrap();
        assert!(
            probe.round_trips().len() >= 30,
            "node {i}: {:?}",
            probe.stats()
        );
        assert!(probe.round_trips().iter().all(|rtt| rtt.rtt_ms == 8));
        let stats = sim.endpoint(i).stats();
        assert_eq!(
            (stats.frames_unrouted, stats.frames_rejected, stats.charged),
            (0, 0, 0)
        );
    }
}

#[test]
fn progress_is_reported_as_virtual_time_advances_in_every_phase() {
    use knhk_bench::crypto::CryptoMode;
    use knhk_bench::scenario::{Progress, run_with_progress};
    let config = RunConfig {
        crypto: CryptoMode::Sim,
        idle_ms: 300,
        ..quick(Scenario::Partition, 20, 1)
    };
    let mut reports = Vec::new();
    let report = run_with_progress(&config, &mut |progress| reports.push(progress));
    assert!(report.converged);
    let converging: Vec<u64> = reports
        .iter()
        .filter_map(|p| match p {
            Progress::Converging { virtual_ms } => Some(*virtual_ms),
            Progress::Idle { .. } => None,
        })
        .collect();
    let idle: Vec<u64> = reports
        .iter()
        .filter_map(|p| match p {
            Progress::Idle { virtual_ms } => Some(*virtual_ms),
            Progress::Converging { .. } => None,
        })
        .collect();
    // Every convergence report comes first, then the idle phase's.
    let first_idle = reports
        .iter()
        .position(|p| matches!(p, Progress::Idle { .. }))
        .unwrap();
    assert_eq!(first_idle, converging.len());
    // Far more often than once a virtual second: the heal alone is 2 virtual s away.
    assert!(converging.len() > 100, "{converging:?}");
    assert!(converging.windows(2).all(|w| w[0] < w[1]), "{converging:?}");
    let converged_ms = report.convergence_us.unwrap() / 1_000;
    assert!(*converging.last().unwrap() + 1 >= converged_ms);
    assert_eq!(idle.first(), Some(&0));
    assert_eq!(idle.last(), Some(&300));
    assert!(idle.windows(2).all(|w| w[0] <= w[1]), "{idle:?}");
    // The old entry point still reports the convergence phase, and the same run.
    let mut old_style = Vec::new();
    let again = run(&config, &mut |ms| old_style.push(ms));
    assert_eq!(old_style, converging);
    assert_eq!(again.coverage, report.coverage);
}

#[test]
fn a_run_that_misses_its_deadline_reports_how_far_it_got() {
    use knhk_bench::crypto::CryptoMode;
    let report = run(
        &RunConfig {
            deadline_ms: 1,
            idle_ms: 0,
            crypto: CryptoMode::Sim,
            ..quick(Scenario::Broadcast, 50, 1)
        },
        &mut |_| {},
    );
    assert!(!report.converged);
    assert_eq!((report.deadline_ms, report.live_nodes), (1, 50));
    assert!((1..50).contains(&report.nodes_with_update), "{report:?}");
    let (at, fraction) = *report.coverage.last().unwrap();
    assert_eq!(at, 1, "the last sample is at the deadline");
    assert!((fraction - report.nodes_with_update as f64 / 50.0).abs() < 1e-12);
}
