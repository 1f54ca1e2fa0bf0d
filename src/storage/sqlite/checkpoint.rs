//! WAL checkpoints on their own thread and connection. SQLite's automatic checkpoint runs inside
//! the committing connection, so it would stall the group-commit writer (and every caller
//! waiting on it) while it copies pages and fsyncs the database file. Here a PASSIVE checkpoint
//! runs on a timer beside the writer instead; it never blocks writers or readers.

use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The running checkpointer.
pub(crate) struct Checkpointer {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<()>,
}

impl Checkpointer {
    /// Starts checkpointing `path` every `every`.
    pub(crate) fn start(path: &Path, busy_ms: u64, every: Duration) -> Result<Self, String> {
        let conn =
            Connection::open_with_flags(path, OpenFlags::default()).map_err(|e| e.to_string())?;
        conn.busy_timeout(Duration::from_millis(busy_ms))
            .map_err(|e| e.to_string())?;
        let (stop, stopped) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("paycore-sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                    }
                }
            })
            .map_err(|e| format!("spawn checkpointer: {e}"))?;
        Ok(Self { stop, handle })
    }

    /// Stops and joins the thread.
    pub(crate) fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.handle.join();
    }
}
