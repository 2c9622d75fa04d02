//! The lake on HDFS: a NameNode and a DataNode from Hadoop's MiniDFSCluster on 127.0.0.1
//! (tests/java/HdfsMiniCluster.java), the historical oracle and the speed oracle with the
//! lake on hdfs://, and a NameNode that cannot be reached.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{Process, Scratch, StrataServer, free_port, repo, run_err, strata, tools};

/// HDFS on 127.0.0.1: a NameNode and a DataNode (tests/java/HdfsMiniCluster.java), storing
/// under the scratch directory, stopped by process id when dropped (and, should the test
/// die, when its standard input closes).
pub struct Hdfs {
    _process: Process,
    /// `hdfs://127.0.0.1:PORT`, the NameNode.
    pub url: String,
}

impl Hdfs {
    pub fn start(dir: &Path) -> Hdfs {
        let jars = tools().join("hadoop-minicluster-3.5.0");
        assert!(
            jars.join(".complete").exists(),
            "Hadoop's minicluster is not in {}: run scripts/setup.sh",
            jars.display()
        );
        let mut child = Command::new("java")
            .args(["-Xmx512m", "-cp"])
            .arg(format!("{}/*", jars.display()))
            .arg(repo().join("tests/java/HdfsMiniCluster.java"))
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.with_extension("log")).expect("the HDFS log"))
            .spawn()
            .expect("start java (HDFS)");
        let stdout = child.stdout.take().expect("stdout");
        let mut process = Process {
            child,
            name: "HDFS minicluster".into(),
        };
        // The launcher prints its NameNode once the DataNode has registered.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("hdfs: namenode ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(180)) {
            Ok(url) => Hdfs { _process: process, url },
            Err(_) => {
                let _ = process.child.kill();
                let log = std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "HDFS did not come up within 180 s; its log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            }
        }
    }
}

#[test]
fn import_batch_and_serve_equal_duckdb_on_hdfs() {
    let _heavy = crate::common::heavy();
    let scratch = Scratch::new("hdfs-historical");
    let hdfs = Hdfs::start(&scratch.path("hdfs"));
    let lake = format!("{}/strata/lake", hdfs.url);
    crate::historical::historical_round_trip(&scratch, &lake, "", &[], crate::historical::events() / 5);
    drop(hdfs);
}

#[test]
fn speed_layer_equals_duckdb_through_kills_on_hdfs() {
    let _heavy = crate::common::heavy();
    let scratch = Scratch::new("hdfs-speed");
    let hdfs = Hdfs::start(&scratch.path("hdfs"));
    let lake = format!("{}/strata/lake", hdfs.url);
    let events = crate::speed::events() / 5;
    crate::speed::speed_oracle(crate::speed::Deployment::OneProcess, &scratch, &lake, events, 14, &[]);
    drop(hdfs);
}

#[test]
fn a_lake_on_an_unreachable_namenode_is_an_error_naming_its_url() {
    let scratch = Scratch::new("hdfs-unreachable");
    // A port nothing listens on.
    let url = format!("hdfs://127.0.0.1:{}/strata/lake", free_port());
    let config = crate::historical::example_config(&scratch.0, &url, "");
    let data = scratch.path("events.jsonl");
    crate::historical::generate(&config, &data, 10, 1);
    let batch = run_err(strata(&config).args(["batch", "run"]));
    assert!(batch.contains(&format!("{url}/_strata/")), "{batch}");
    let import = run_err(strata(&config).args(["import", "page_views"]).arg(&data));
    assert!(import.contains(&format!("{url}/raw/page_views/")), "{import}");
    // The server starts (the lake may come back); each query that needs it says where it is.
    let server = StrataServer::start(&config, &[]);
    let query = |sql: &str| run_err(strata(&config).args(["query", sql, "--endpoint", &server.endpoint()]));
    let raw = query("SELECT count(*) FROM raw.page_views");
    assert!(raw.contains(&format!("{url}/raw/page_views/")), "{raw}");
    let view = query("SELECT * FROM page_stats");
    assert!(view.contains(&format!("{url}/views/page_stats/")), "{view}");
}
