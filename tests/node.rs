//! The one-process node started in-process, as `strata run` starts it (`strata::node::Node`
//! from the package's library): what it serves equals DuckDB over the produced events, and
//! after its ordered shutdown a new node, started on the same lake, serves the same answers
//! and then everything, with every event archived exactly once.

use std::collections::BTreeMap;
use std::sync::Arc;

use strata::node::Node;
use strata_core::config::Config;

use crate::common::{Scratch, heavy};
use crate::historical::{example_config, generate};
use crate::kafka::Kafka;
use crate::speed::{oracle, produce_with, wait_produced};

#[test]
fn a_node_started_in_process_equals_duckdb_through_an_ordered_restart() {
    let _heavy = heavy();
    let scratch = Scratch::new("node");
    let broker = Kafka::start(&scratch);
    broker.create_topic("page_views", 3);
    let lake = scratch.path("lake");
    let path = example_config(&scratch.0, lake.to_str().unwrap(), "");
    let env = BTreeMap::from([("STRATA_KAFKA_BROKERS".to_string(), broker.brokers.clone())]);
    let text = std::fs::read_to_string(&path).unwrap();
    let config = Arc::new(Config::parse(&text, &path, &env).expect("the example config"));
    let data = scratch.path("events.jsonl");
    let positions = scratch.path("positions.jsonl");
    let total = 20_000;
    generate(&path, &data, total, 17);

    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let start = || {
        let node = runtime
            .block_on(Node::start(&config, "127.0.0.1:0".parse().unwrap(), None, false))
            .expect("the node starts");
        let endpoint = format!("grpc://{}", node.server.address);
        (node, endpoint)
    };
    let (node, endpoint) = start();
    wait_produced(produce_with(&broker.brokers, &data, &positions, 1, total / 2 + 1, &[]));
    oracle(&endpoint, &scratch, &data, &positions, total / 2, false);
    runtime.block_on(node.shutdown()).expect("an ordered shutdown");

    // What the first node consumed is in the lake: the second one starts after it, and its
    // answers still count every event once.
    let (node, endpoint) = start();
    oracle(&endpoint, &scratch, &data, &positions, total / 2, false);
    wait_produced(produce_with(
        &broker.brokers,
        &data,
        &positions,
        total / 2 + 1,
        total + 1,
        &[],
    ));
    oracle(&endpoint, &scratch, &data, &positions, total, true);
    runtime.block_on(node.shutdown()).expect("an ordered shutdown");
}
