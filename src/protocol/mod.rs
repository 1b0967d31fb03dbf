//! Protocol adapters: each one a thin HTTP layer over the upload engine.

pub mod attachments;
pub mod chunked;
pub mod filepond;
pub mod kit;
pub mod resumable;
pub mod tus;
