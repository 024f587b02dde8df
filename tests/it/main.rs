//! The integration tests that share the servers peacefully, in one test binary (one link
//! instead of eleven). Each test has its own exchange/queue prefix, database and bucket
//! (`logfleet_testkit::TestEnv`), so they run in parallel.
//!
//! The tests that disturb the servers for everyone (stop MongoDB, restart the broker) are
//! binaries of their own, which cargo runs one after another: `reconnect` and `crash_suite`.

mod archive_recovery;
mod core_fleet;
mod dead_letters;
mod deploy_manifests;
mod exactly_once;
mod fair_share;
mod hostile_input;
mod hostile_timing;
mod observability;
mod producer;
mod query;
mod reclaim;
mod retention;
mod storage;
mod topology;
mod viewer;
