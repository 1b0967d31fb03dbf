//! Integration tests over real HTTP against a real chunkd process, each run
//! against SQLite and PostgreSQL.

mod common;

mod auth;
mod crash;
mod errors;
mod expiry;
mod large;
mod locking;
mod processes;
mod transcript;
mod uploads;
