//! The speed layer's JSON decoding alone, on one core: how long the consumer's decoder takes
//! per record, without Kafka, the views or the archive.
//!
//! decode_rate CONFIG EVENTS_FILE [ROUNDS]
//!     decodes every line of EVENTS_FILE (JSON records, as `strata generate` writes them) as
//!     records of CONFIG's first source, cutting a batch every 4,096 rows (a fixed size: the
//!     consumer cuts its own when it has caught up), ROUNDS times (5 by default)
//!     ->  per round "rows rejected ns_per_record", then "best ns_per_record records_per_second"

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use strata_core::config::Config;
use strata_core::decode::JsonDecoder;
use strata_core::schema::SourceSchema;

/// Rows per batch cut.
const BATCH_ROWS: usize = 4096;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (config, events, rounds) = match args.as_slice() {
        [_, config, events] => (config, events, 5),
        [_, config, events, rounds] => (config, events, rounds.parse().expect("ROUNDS: a number")),
        _ => {
            eprintln!("usage: decode_rate CONFIG EVENTS_FILE [ROUNDS]");
            std::process::exit(2);
        }
    };
    let text = std::fs::read_to_string(config).unwrap_or_else(|e| panic!("read {config}: {e}"));
    let config = Config::parse(&text, Path::new(config), &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
    let source = SourceSchema::new(&config.sources[0]);
    let data = std::fs::read(events).unwrap_or_else(|e| panic!("read {events}: {e}"));
    let lines: Vec<&[u8]> = data.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let mut decoder = JsonDecoder::new(source.clone());
        let (mut rows, mut rejected) = (0, 0);
        let started = Instant::now();
        for line in &lines {
            if decoder.decode(line, None).is_err() {
                rejected += 1;
            }
            if decoder.rows() == BATCH_ROWS {
                rows += decoder.finish().num_rows();
            }
        }
        rows += decoder.finish().num_rows();
        let ns = started.elapsed().as_secs_f64() * 1e9 / lines.len() as f64;
        best = best.min(ns);
        println!("{rows} {rejected} {ns:.1}");
    }
    println!("best {best:.1} {:.0}", 1e9 / best);
}
