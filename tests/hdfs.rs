//! HDFS for real (issue 14, point 1; not yet wired into tests/e2e.rs: written, not yet run
//! by the suite). A NameNode and a DataNode from Hadoop's MiniDFSCluster on 127.0.0.1
//! (tests/java/HdfsMiniCluster.java), and the historical oracle with the lake on hdfs://.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{Process, Scratch, repo};

/// Where scripts/setup.sh puts the tools it fetches ($STRATA_TOOLS, or ~/.cache/strata-tools).
pub fn tools() -> PathBuf {
    std::env::var_os("STRATA_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/strata-tools"))
}

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
    let scratch = Scratch::new("hdfs");
    let hdfs = crate::common::Hdfs::start(&scratch.path("hdfs"));
    historical_round_trip(&scratch, &format!("{}/strata/lake", hdfs.url), "", &[], events() / 5);
    drop(hdfs);
}
