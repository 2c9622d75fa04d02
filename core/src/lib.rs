//! `strata-core`: the vocabulary every Strata layer shares.
//!
//! - [`config`]: `strata.toml`, strict, with errors naming file, key and what is expected;
//! - [`schema`]: the raw and rejected tables' Arrow schemas;
//! - [`decode`]: JSON records to Arrow, one bad record rejected with its reason;
//! - [`view`]: views defined once in SQL, compiled to mergeable states and finalizers;
//! - [`aggregate`]: the mergeable aggregates views use, one file each, and their functions;
//! - [`functions`]: the window functions, and every function registered in a session;
//! - [`duration`]: durations as people write them (`5m`, `1 hour`), for views, config and flags;
//! - [`lake`]: Delta tables on a local directory, S3 or HDFS, and what their commits record;
//! - [`session`], [`executor`]: DataFusion sessions and the runtime CPU-heavy work runs on;
//! - [`clock`]: injectable time and batch schedules;
//! - [`status`]: errors as gRPC statuses, for every Flight service.
//! - [`tls`]: TLS for the Flight endpoints, and the endpoint URLs clients accept;

pub mod aggregate;
pub mod clock;
pub mod config;
pub mod decode;
pub mod duration;
pub mod error;
pub mod executor;
pub mod functions;
pub mod lake;
pub mod metrics;
pub mod schema;
pub mod session;
pub mod speed;
pub mod status;
pub mod tls;
pub mod view;

pub use error::{Error, ErrorDomain, Result};

/// FNV-1a, 64 bits: a stable hash for fingerprints and ids (stable across Rust versions,
/// unlike `DefaultHasher`).
pub fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
