//! Integration tests over real HTTP against a real chunkd process, each run
//! against SQLite and PostgreSQL.

mod common;

mod auth;
mod errors;
mod expiry;
mod large;
mod locking;
mod transcript;
mod uploads;
