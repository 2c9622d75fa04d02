//! The batch layer on Apache DataFusion Ballista: `strata scheduler` and two `strata
//! executor` processes on loopback; the historical oracle (on a local lake and on HDFS) and
//! the speed oracle with every recompute on the cluster, the same states as the local
//! engine's, an executor killed mid-run, and a scheduler that cannot be reached.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use crate::common::{Process, Scratch, free_port, run_err, run_ok, strata, wait_for_port};
use crate::historical::{events, example_config, generate, historical_round_trip};

/// A scheduler and its executors, stopped by process id when dropped.
pub struct Cluster {
    /// `df://127.0.0.1:PORT`
    pub scheduler: String,
    processes: Vec<Process>,
}

impl Cluster {
    /// The environment that sends `strata batch`'s recomputes to this cluster.
    pub fn env(&self) -> [(&'static str, &str); 2] {
        [
            ("STRATA_BATCH_ENGINE", "ballista"),
            ("STRATA_BATCH_SCHEDULER", self.scheduler.as_str()),
        ]
    }

    /// SIGKILL to executor `i`.
    pub fn kill_executor(&mut self, i: usize) {
        let executor = &mut self.processes[i + 1];
        let _ = executor.child.kill();
        let _ = executor.child.wait();
    }

    /// A scheduler on `address` (port 0: any) and `executors` executors of one task each.
    pub fn start(config: &Path, dir: &Path, address: &str, executors: usize) -> Cluster {
        let mut scheduler = strata(config)
            .args(["scheduler", "--address", address])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("scheduler.log")).expect("scheduler log"))
            .spawn()
            .expect("start strata scheduler");
        let mut line = String::new();
        BufReader::new(scheduler.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the scheduler's banner");
        let url = line
            .trim()
            .strip_prefix("strata scheduler listening on ")
            .unwrap_or_else(|| panic!("the scheduler printed {line:?}"))
            .to_string();
        let mut processes = vec![Process {
            child: scheduler,
            name: "strata scheduler".into(),
        }];
        for i in 0..executors {
            let (port, grpc_port) = (free_port(), free_port());
            let work = dir.join(format!("executor-{i}"));
            let mut child = strata(config)
                .args(["executor", "--scheduler", &url, "--concurrency", "1"])
                .args(["--port", &port.to_string(), "--grpc-port", &grpc_port.to_string()])
                .arg("--work-dir")
                .arg(&work)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join(format!("executor-{i}.log"))).expect("executor log"))
                .spawn()
                .expect("start strata executor");
            let flight: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            wait_for_port(flight, &mut child, "strata executor");
            processes.push(Process {
                child,
                name: format!("strata executor {i}"),
            });
        }
        Cluster {
            scheduler: url,
            processes,
        }
    }
}

#[test]
fn import_batch_on_ballista_and_serve_equal_duckdb_and_the_local_engines_states() {
    let _heavy = crate::common::heavy();
    let scratch = Scratch::new("ballista");
    let lake = scratch.path("lake");
    let config = example_config(&scratch.0, lake.to_str().unwrap(), "");
    let cluster = Cluster::start(&config, &scratch.0, "127.0.0.1:0", 2);
    let env = cluster.env();
    historical_round_trip(&scratch, lake.to_str().unwrap(), "", &env, events() / 5);

    // The local engine, on the same snapshot, publishes the same state rows.
    let (_, on_ballista) = crate::lake::read_lake(&config, &lake, true);
    let out = run_ok(strata(&config).args(["batch", "run", "--force"]));
    assert!(out.contains("published view page_stats version"), "{out}");
    let (_, local) = crate::lake::read_lake(&config, &lake, true);
    for view in ["views/page_stats", "views/device_5m"] {
        assert_eq!(
            on_ballista[view], local[view],
            "{view}: Ballista's states differ from the local engine's"
        );
    }
    drop(cluster);
}

#[test]
fn import_batch_on_ballista_and_serve_equal_duckdb_with_the_lake_on_hdfs() {
    let _heavy = crate::common::heavy();
    let scratch = Scratch::new("ballista-hdfs");
    let hdfs = crate::hdfs::Hdfs::start(&scratch.path("hdfs"));
    let lake = format!("{}/strata/lake", hdfs.url);
    // The scheduler and the executors read the lake on HDFS with the config's location.
    let config = example_config(&scratch.0, &lake, "");
    let cluster = Cluster::start(&config, &scratch.0, "127.0.0.1:0", 2);
    let env = cluster.env();
    historical_round_trip(&scratch, &lake, "", &env, events() / 5);
    drop(cluster);
    drop(hdfs);
}

#[test]
fn the_speed_oracle_with_every_batch_run_on_ballista() {
    let _heavy = crate::common::heavy();
    let scratch = Scratch::new("ballista-speed");
    let lake = scratch.path("lake");
    let config = example_config(&scratch.0, lake.to_str().unwrap(), "");
    let cluster = Cluster::start(&config, &scratch.0, "127.0.0.1:0", 2);
    let env = cluster.env();
    crate::speed::speed_oracle(
        crate::speed::Deployment::OneProcess,
        &scratch,
        lake.to_str().unwrap(),
        events() / 5,
        15,
        &env,
    );
    drop(cluster);
}

#[test]
fn a_scheduler_that_cannot_be_reached_fails_the_run_and_publishes_nothing() {
    let scratch = Scratch::new("ballista-unreachable");
    let lake = scratch.path("lake");
    let config = example_config(&scratch.0, lake.to_str().unwrap(), "");
    let data = scratch.path("events.jsonl");
    generate(&config, &data, 2_000, 5);
    run_ok(strata(&config).args(["import", "page_views"]).arg(&data));
    let address = format!("127.0.0.1:{}", free_port());
    let scheduler = format!("df://{address}");
    let batch = |scheduler: &str| {
        let mut c = strata(&config);
        c.args(["batch", "run"])
            .env("STRATA_BATCH_ENGINE", "ballista")
            .env("STRATA_BATCH_SCHEDULER", scheduler);
        c
    };
    let err = run_err(&mut batch(&scheduler));
    assert!(
        err.contains(&format!("on the Ballista cluster at {scheduler}")) && err.contains("nothing was published"),
        "{err}"
    );
    assert!(!lake.join("views/page_stats").exists(), "a view was published");
    // Once the scheduler is there, the next run publishes.
    let cluster = Cluster::start(&config, &scratch.0, &address, 1);
    let out = run_ok(&mut batch(&cluster.scheduler));
    assert!(out.contains("published view page_stats version 1"), "{out}");

    // A file of the snapshot deleted behind the lake's back (an outside VACUUM): the
    // recompute fails naming it, rather than reading it as no rows, and publishes nothing.
    let raw = lake.join("raw/page_views");
    let file = raw.join(active_files(&raw).first().expect("a file in the raw table's snapshot"));
    let published: std::collections::HashMap<&str, usize> = ["page_stats", "device_5m"]
        .into_iter()
        .map(|view| (view, commits(&lake.join("views").join(view))))
        .collect();
    std::fs::remove_file(&file).unwrap();
    let name = file.file_name().unwrap().to_str().unwrap().to_string();
    let err = run_err(batch(&cluster.scheduler).arg("--force"));
    assert!(
        err.contains(&format!("{name}, a file of the raw table's snapshot, is gone"))
            && err.contains("nothing was published"),
        "{err}"
    );
    for view in ["page_stats", "device_5m"] {
        assert_eq!(
            commits(&lake.join("views").join(view)),
            published[view],
            "{view} changed"
        );
    }
    drop(cluster);
}

/// The data files of a Delta table's latest version (relative paths), by replaying its log.
fn active_files(table: &Path) -> Vec<String> {
    let mut logs: Vec<_> = std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    logs.sort();
    let mut active = std::collections::BTreeSet::new();
    for log in logs {
        for line in std::fs::read_to_string(log).unwrap().lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(path) = action["add"]["path"].as_str() {
                active.insert(path.to_string());
            } else if let Some(path) = action["remove"]["path"].as_str() {
                active.remove(path);
            }
        }
    }
    active.into_iter().collect()
}

/// The commits in a Delta table's log.
fn commits(table: &Path) -> usize {
    std::fs::read_dir(table.join("_delta_log"))
        .map(|d| {
            d.filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "json"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn an_executor_killed_during_a_run_publishes_nothing_half_and_the_next_run_is_right() {
    let _heavy = crate::common::heavy();
    let scratch = Scratch::new("ballista-kill");
    let lake = scratch.path("lake");
    let config = example_config(&scratch.0, lake.to_str().unwrap(), "");
    let data = scratch.path("events.jsonl");
    generate(&config, &data, events() / 5, 21);
    run_ok(strata(&config).args(["import", "page_views"]).arg(&data));
    let mut cluster = Cluster::start(&config, &scratch.0, "127.0.0.1:0", 2);
    let env = [
        ("STRATA_BATCH_ENGINE", "ballista".to_string()),
        ("STRATA_BATCH_SCHEDULER", cluster.scheduler.clone()),
    ];
    let mut run = strata(&config)
        .args(["batch", "run"])
        .envs(env.clone())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start strata batch run");
    // An executor's work directory gets a job's directory once it runs a task: SIGKILL
    // the first that does, then.
    let busy =
        |i: usize| std::fs::read_dir(scratch.path(&format!("executor-{i}"))).is_ok_and(|mut d| d.next().is_some());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let victim = loop {
        if let Some(i) = (0..2).find(|&i| busy(i)) {
            break i;
        }
        assert!(
            run.try_wait().unwrap().is_none(),
            "the run ended before an executor ran a task"
        );
        assert!(std::time::Instant::now() < deadline, "no task ran within 120 s");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    cluster.kill_executor(victim);
    let out = run.wait_with_output().expect("the batch run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("the run with an executor killed: {}\n{stdout}{stderr}", out.status);
    if !out.status.success() {
        // Failed: nothing published, and the error says so.
        assert!(stderr.contains("nothing was published"), "{stderr}");
    }
    // Completed (Ballista ran the lost tasks again) or not, the next run leaves the views
    // right: published and equal to DuckDB.
    let out = run_ok(strata(&config).args(["batch", "run"]).envs(env));
    println!("{out}");
    let server = crate::common::StrataServer::start(&config, &[]);
    let oracle = crate::common::run_python(
        "oracle.py",
        &[
            "--endpoint",
            &server.endpoint(),
            "--scratch",
            scratch.0.to_str().unwrap(),
            "--views-only",
            data.to_str().unwrap(),
        ],
    );
    println!("{oracle}");
    assert!(oracle.contains("oracle: every view equals DuckDB"), "{oracle}");
    drop(cluster);
}
