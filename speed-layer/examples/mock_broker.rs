//! librdkafka's mock cluster as a broker process, for the speed benchmark's second broker:
//! one Kafka broker on 127.0.0.1 that costs next to no CPU, so that a measure shows what
//! the system measured adds (tansu takes a core of its own on the benchmark's machine).
//!
//! mock_broker TOPIC:PARTITIONS ...  ->  prints its bootstrap servers, serves until its
//! standard input closes

use std::io::Read;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

fn main() {
    let topics: Vec<(String, i32)> = std::env::args()
        .skip(1)
        .map(|t| {
            let (name, partitions) = t.split_once(':').expect("topics are NAME:PARTITIONS");
            (name.to_string(), partitions.parse().expect("PARTITIONS is a number"))
        })
        .collect();
    let cluster = MockCluster::<DefaultProducerContext>::new(1).expect("mock cluster");
    for (name, partitions) in &topics {
        cluster.create_topic(name, *partitions, 1).expect("topic");
    }
    println!("{}", cluster.bootstrap_servers());
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
