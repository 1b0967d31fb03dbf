//! Protocol adapters: each one a thin HTTP layer over the upload engine.

pub mod chunked;
pub mod headers;
pub mod tus;
