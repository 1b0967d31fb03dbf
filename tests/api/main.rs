//! Integration tests over real HTTP against a real chunkd process, each run
//! against SQLite and PostgreSQL.

mod common;

mod attachments;
mod auth;
mod browser;
mod chunkup;
mod crash;
mod disk;
mod errors;
mod events;
mod expiry;
mod filepond;
mod finish;
mod hooks;
mod hostile;
mod jwt;
mod large;
mod load;
mod locking;
mod openapi;
mod operations;
mod processes;
mod quotas;
mod receiver;
mod refusals;
mod resumable;
mod s3;
mod transcript;
mod tus;
mod uploads;
