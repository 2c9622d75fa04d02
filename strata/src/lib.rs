//! The `strata` binary's library: its subcommands ([`cmd`]), the one-process [`node`] (speed,
//! batch schedule and serving with their ordered shutdown, for `strata run`, `strata demo`
//! and tests that start Strata in-process), and the clickstream [`generate`]d and
//! [`produce`]d for tests and trials.

pub mod cmd;
pub mod demo;
pub mod generate;
pub mod node;
pub mod ops;
pub mod produce;
pub mod query;
