//! `logctl` through its binary, against the real services: one test binary for all commands.

mod common;
mod dlq;
mod ops;
mod publish;
mod read;
mod retention;
