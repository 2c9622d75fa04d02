//! What the unit tests of this crate share.

use std::collections::BTreeMap;
use std::path::Path;

use strata_core::config::Config;

/// A config with one source, `clicks` (topic `clicks`, event time in epoch millis), a
/// tumbling view with approx_distinct and a filtered hopping view; the lake is `lake` beside
/// `file`.
pub fn clicks_config(file: &Path) -> Config {
    let text = r#"
[lake]
url = "lake"
[[sources]]
name = "clicks"
topics = ["clicks"]
event_time = { column = "ts", format = "epoch_millis" }
[sources.schema]
ts = "timestamp"
user = "string"
page = "string"
ms = "int64"
[[views]]
name = "per_page"
sql = "SELECT window_start, page, count(*) AS n, sum(ms) AS total, avg(ms) AS mean, approx_distinct(user) AS users FROM clicks GROUP BY tumble(ts, INTERVAL '1 minute'), page"
[[views]]
name = "sliding"
sql = "SELECT window_start, count(*) AS n, max(ms) AS worst FROM clicks WHERE ms > 10 GROUP BY hop(ts, INTERVAL '1 minute', INTERVAL '3 minutes')"
"#;
    Config::parse(text, file, &BTreeMap::new()).expect("the test config parses")
}
