//! paycore: a payment core for utilities. Orders live in per-order actors, are stored in SQLite
//! through a group-committing writer, and reach channels through rate-limited channel actors.

pub mod actors;
pub mod app;
pub mod billers;
pub mod channels;
pub mod config;
pub mod domain;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod outbound;
pub mod storage;
pub mod streams;
