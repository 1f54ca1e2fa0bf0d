//! Integration tests: the real app over HTTP, with the shipped channel simulator.

mod common;
mod errors;
mod fulfillment;
mod kafka;
mod ledger;
mod lifecycle;
mod log;
mod notifications;
mod operations;
mod settlement;
