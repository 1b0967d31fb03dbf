//! The test harness: a real `chunkd` process per test, on its own data
//! directory and its own database (SQLite file, or a PostgreSQL database
//! cloned from a migrated template), spoken to over real HTTP. The
//! benchmark uses it too. `store` (where a server keeps its rows and
//! bytes), `server` (its process), `wire` (raw HTTP/1.1), `client` (the
//! protocols' requests, bodies and test data), `tools` (real clients from
//! PyPI and npm).

#![allow(dead_code)]

mod client;
mod s3;
mod server;
mod store;
mod tools;
mod wire;

pub use client::*;
pub use s3::*;
pub use server::*;
pub use store::*;
// The benchmark, which includes this harness too, installs no clients.
#[allow(unused_imports)]
pub use tools::*;
pub use wire::*;

/// Runs each listed test function against SQLite, PostgreSQL, and
/// PostgreSQL with the bytes in the S3 emulator.
#[macro_export]
macro_rules! all_backends {
    ($($name:ident),* $(,)?) => {
        $crate::both_backends!($($name),*);
        mod s3 {
            $( #[test] fn $name() { super::$name($crate::common::Backend::S3) } )*
        }
    };
}

/// Runs each listed test function against SQLite and against PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name($crate::common::Backend::Sqlite) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name($crate::common::Backend::Postgres) } )*
        }
    };
}
