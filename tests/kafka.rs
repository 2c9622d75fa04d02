//! Apache Kafka for the end-to-end tests: one KRaft broker (broker and controller in one
//! process) on 127.0.0.1, started by scripts/kafka-broker with the jars scripts/setup.sh
//! fetched, and stopped by process id.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::common::{Process, Scratch, free_port, repo};

/// A running broker.
pub struct Kafka {
    process: Process,
    pub brokers: String,
    log: PathBuf,
}

impl Kafka {
    /// Starts a broker on free ports and waits until it answers metadata requests. A port
    /// taken between choosing and binding it makes the broker exit: it is tried again on
    /// others.
    pub fn start(scratch: &Scratch) -> Kafka {
        for attempt in 0..3 {
            let (port, controller) = (free_port(), free_port());
            let dir = scratch.path(&format!("kafka-{attempt}"));
            let log = scratch.path(&format!("kafka-{attempt}.log"));
            let child = Command::new(repo().join("scripts/kafka-broker"))
                .arg(&dir)
                .arg(port.to_string())
                .arg(controller.to_string())
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).expect("kafka log"))
                .stderr(std::fs::File::create(log.with_extension("err")).expect("kafka log"))
                .spawn()
                .expect("start scripts/kafka-broker");
            let mut kafka = Kafka {
                process: Process {
                    child,
                    name: "kafka".into(),
                },
                brokers: format!("127.0.0.1:{port}"),
                log,
            };
            if kafka.wait_ready(Duration::from_secs(90)) {
                return kafka;
            }
            eprintln!("Apache Kafka did not start on port {port} (attempt {attempt}); trying other ports");
        }
        panic!("Apache Kafka did not start: see the kafka-*.log files of the test's scratch directory");
    }

    /// Whether the broker answers a metadata request before `within` (false if it exited).
    fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("log_level", "0")
            .create()
            .expect("a metadata client");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.process.child.try_wait() {
                let err = std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default();
                eprintln!("Apache Kafka exited with {status}:\n{err}");
                return false;
            }
            if let Ok(metadata) = client.fetch_metadata(None, Duration::from_millis(500))
                && !metadata.brokers().is_empty()
            {
                return true;
            }
        }
        false
    }

    /// Creates a topic and waits until every partition has a leader.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .expect("an admin client");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let results = runtime
            .block_on(admin.create_topics([&topic], &AdminOptions::new()))
            .expect("create topic");
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("cannot create topic {t}: {e}"));
        }
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .create()
            .expect("a metadata client");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = client
                .fetch_metadata(Some(name), Duration::from_secs(2))
                .ok()
                .and_then(|m| {
                    m.topics().first().map(|t| {
                        t.partitions().len() == partitions as usize && t.partitions().iter().all(|p| p.leader() >= 0)
                    })
                })
                .unwrap_or(false);
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "topic {name} has no leaders after 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the broker (SIGTERM, then SIGKILL).
    pub fn stop(mut self) {
        self.process.terminate();
    }
}
