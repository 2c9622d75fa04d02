//! End-to-end tests across processes: the `strata` binary against a real lake (a local
//! directory, or an S3 server), queried by real Flight SQL clients (Python ADBC,
//! `pyarrow.flight`, `strata query`) and compared with DuckDB as the oracle.
//!
//! They need the project's Python environment (scripts/setup.sh installs it); the README's
//! test command, scripts/test.sh, sets everything up and runs them.

mod ballista;
mod clients;
mod common;
mod demo;
mod group;
mod hdfs;
mod historical;
mod kafka;
mod lake;
mod limits;
mod node;
mod security;
mod speed;
