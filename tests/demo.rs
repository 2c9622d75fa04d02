//! `strata demo`, the README's first command: it starts on embedded defaults, answers Flight
//! SQL (from `strata query` and from the README's ADBC snippet) with rows that grow, serves
//! /health and /metrics, stops cleanly on SIGINT, and leaves a lake in which every event it
//! archived is readable by `strata serve` and counted exactly once by the batch layer.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::{Process, Scratch, StrataServer, free_port, http_get, python, repo, run_ok, strata, wait_for_port};

/// The first ```sh block of the README: the quick start.
fn quick_start() -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("README.md opens with a ```sh block");
    block
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The README's Python snippets that query the demo's endpoint (ADBC, then `pyarrow.flight`).
fn python_snippets() -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    readme
        .split("```python\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap_or_default().to_string())
        .filter(|snippet| snippet.contains("grpc://127.0.0.1:50051"))
        .collect()
}

fn scalar(endpoint: &str, sql: &str) -> i64 {
    let out = run_ok(Command::new(env!("CARGO_BIN_EXE_strata")).args([
        "query",
        sql,
        "--endpoint",
        endpoint,
        "--format",
        "csv",
    ]));
    let value = out.lines().nth(1).unwrap_or_else(|| panic!("no row for {sql}: {out}"));
    let value = value.trim_matches('"');
    if value.is_empty() {
        0
    } else {
        value.parse().unwrap_or_else(|_| panic!("{sql}: not a number: {value}"))
    }
}

#[test]
fn quick_start_is_what_the_tests_run() {
    let commands = quick_start();
    assert_eq!(
        commands,
        ["cargo run -- demo", "scripts/test.sh"],
        "the README opens with the demo and the test command"
    );
    let ci = std::fs::read_to_string(repo().join(".ci/run")).expect(".ci/run");
    assert!(ci.contains("scripts/test.sh"), ".ci/run runs the README's test command");
    // `cargo run` picks the strata binary: the workspace's default member.
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    assert!(manifest.contains("default-members = [\"strata\"]"), "{manifest}");
}

/// Every `strata ...` command line shown in the README parses (the command, its
/// subcommands and flags exist): each is run with `--help` appended.
#[test]
fn readme_commands_exist() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let mut in_sh = false;
    let mut checked = 0;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        let line = line.split(" #").next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("strata ") else {
            continue;
        };
        if !in_sh {
            continue;
        }
        let args = shell_words(rest);
        let out = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(&args)
            .arg("--help")
            .output()
            .expect("run strata");
        assert!(
            out.status.success(),
            "README command `strata {rest}` does not parse:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} strata commands found in the README");
}

/// Splits a command line on spaces, keeping "double quoted" words whole.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

#[test]
fn demo_serves_growing_views_and_stops_cleanly_on_sigint() {
    let _heavy = crate::common::heavy();
    let scratch = Scratch::new("demo");
    let dir = scratch.path("demo");
    let (address, metrics): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["demo", "--plain", "--rate", "3000", "--address"])
        .arg(address.to_string())
        .arg("--metrics-address")
        .arg(metrics.to_string())
        .arg("--dir")
        .arg(&dir)
        .env("STRATA_LOG", "warn,deltalake_core=error,buoyant_kernel=off")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start strata demo");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("demo| {line}");
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut demo = Process {
        child,
        name: "strata demo".into(),
    };
    wait_for_port(address, &mut demo.child, "strata demo");
    let endpoint = format!("http://{address}");

    // Rows grow: the views count events as they arrive.
    let sql = "SELECT sum(views) FROM page_stats";
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let views = scalar(&endpoint, sql);
        if views > *seen.last().unwrap_or(&0) {
            seen.push(views);
        }
        assert!(Instant::now() < deadline, "page_stats did not grow: {seen:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let rows_before = scalar(&endpoint, "SELECT count(*) FROM device_5m");
    assert!(rows_before > 0);

    // The README's Python snippets work against the demo as printed.
    let snippets = python_snippets();
    assert_eq!(snippets.len(), 2, "the README shows ADBC and pyarrow.flight");
    for (snippet, expect) in snippets.iter().zip(["window_start", "device"]) {
        let snippet = snippet.replace("grpc://127.0.0.1:50051", &format!("grpc://{address}"));
        let out = Command::new(python()).arg("-c").arg(&snippet).output().expect("python");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(expect),
            "the README's snippet failed:\n{snippet}\n--- stdout\n{stdout}\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let health = http_get(metrics, "/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let prometheus = http_get(metrics, "/metrics");
    for metric in [
        "strata_events_consumed_total",
        "strata_queries_total",
        "strata_speed_visible_seconds",
    ] {
        assert!(prometheus.contains(metric), "/metrics lacks {metric}");
    }

    // Ctrl-C: a graceful stop that archives everything consumed.
    let _ = Command::new("kill").args(["-INT", &demo.pid().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = demo.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "strata demo did not stop within 60 s of SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "strata demo exited with {status}");
    let output: Vec<String> = lines.try_iter().collect();
    let summary = output
        .iter()
        .find(|l| l.starts_with("demo stopped"))
        .unwrap_or_else(|| panic!("no summary line in {output:#?}"));
    let number_before = |word: &str| -> i64 {
        let words: Vec<&str> = summary.split_whitespace().collect();
        let i = words.iter().position(|w| *w == word).expect(word);
        words[i - 1].parse().expect("a count")
    };
    let (events, rejected) = (number_before("events"), number_before("rejected"));
    assert!(events > 0 && rejected > 0, "{summary}");
    assert!(events >= seen[2], "{summary}: fewer than the {} served", seen[2]);

    // Every archived event is readable, and the batch layer counts each once.
    let config = dir.join("strata.toml");
    assert!(
        output
            .iter()
            .any(|l| l.contains(&format!("strata serve --config {}", config.display()))),
        "the demo says how to query its lake again"
    );
    run_ok(strata(&config).args(["batch", "run"]));
    let server = StrataServer::start(&config, &[]);
    let endpoint = format!("http://{}", server.address);
    assert_eq!(scalar(&endpoint, "SELECT count(*) FROM raw.page_views"), events);
    assert_eq!(scalar(&endpoint, "SELECT count(*) FROM rejected.page_views"), rejected);
    assert_eq!(
        scalar(
            &endpoint,
            "SELECT count(*) FROM (SELECT _partition, _offset FROM raw.page_views GROUP BY 1, 2 HAVING count(*) > 1)"
        ),
        0,
        "no event archived twice"
    );
    assert_eq!(scalar(&endpoint, "SELECT sum(views) FROM page_stats"), events);
}
