//! Outbox rows to shared events: the writer puts each event it commits here, and a position
//! is decoded only when it is no longer among the most recent ones (the log's consumers read the
//! same positions one after another, mostly right after their commit); its bytes are kept as
//! stored.

use crate::domain::event::Event;
use crate::storage::{StoreError, StoredEvent};
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

/// Decoded outbox rows by position: the event and its stored bytes.
type Recent = LruCache<u64, (Arc<Event>, Arc<[u8]>)>;

/// A bounded cache of decoded outbox rows, by position.
pub(super) struct Decoded {
    recent: Mutex<Recent>,
}

impl Decoded {
    /// Holds at most `capacity` events (at least one).
    pub fn new(capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            recent: Mutex::new(LruCache::new(cap)),
        }
    }

    /// The rows `(seq, body)` as events: cached ones shared, the others decoded (outside the
    /// lock) and cached. A row that does not decode is corrupt storage.
    pub fn resolve(&self, rows: Vec<(u64, Vec<u8>)>) -> Result<Vec<StoredEvent>, StoreError> {
        let mut out: Vec<Option<StoredEvent>> = Vec::with_capacity(rows.len());
        let mut misses = Vec::new();
        {
            let mut recent = self.lock();
            for (i, (seq, body)) in rows.into_iter().enumerate() {
                match recent.get(&seq) {
                    Some((event, encoded)) => out.push(Some(StoredEvent {
                        partition: 0,
                        seq,
                        event: event.clone(),
                        encoded: encoded.clone(),
                    })),
                    None => {
                        out.push(None);
                        misses.push((i, seq, body));
                    }
                }
            }
        }
        if misses.is_empty() {
            return Ok(out.into_iter().flatten().collect());
        }
        let mut decoded = Vec::with_capacity(misses.len());
        for (i, seq, body) in misses {
            // Every outbox row so far is schema version 1 (see `streams::codec`).
            let event = crate::streams::codec::decode(1, &body)
                .map_err(|e| StoreError::Corrupt(format!("event {seq}: {e}")))?;
            decoded.push((i, seq, Arc::new(event), Arc::<[u8]>::from(body)));
        }
        let mut recent = self.lock();
        for (i, seq, event, encoded) in decoded {
            recent.put(seq, (event.clone(), encoded.clone()));
            out[i] = Some(StoredEvent {
                partition: 0,
                seq,
                event,
                encoded,
            });
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Events the writer committed, by position: the consumers will read them next.
    pub fn put(&self, events: Vec<StoredEvent>) {
        let mut recent = self.lock();
        for e in events {
            recent.put(e.seq, (e.event, e.encoded));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recent> {
        // The cache holds no invariant a panic could break: a poisoned one is still usable.
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: u64, id: &str) -> (u64, Vec<u8>) {
        let e = Event {
            event_id: crate::domain::ids::EventId::parse(id).unwrap(),
            event_type: "order.created".into(),
            order_id: "ord_1".into(),
            merchant_id: "m1".into(),
            version: seq,
            occurred_at: time::OffsetDateTime::UNIX_EPOCH,
            data: serde_json::json!({"status": "CREATED"}).into(),
        };
        (seq, crate::streams::codec::encode(&e))
    }

    #[test]
    fn a_position_read_twice_is_decoded_once_and_shared() {
        let d = Decoded::new(8);
        let first = d
            .resolve(vec![row(1, "evt_01JDX2M4Q8R5T7V9W1Y3Z5B7E1")])
            .unwrap();
        // The second read's bytes differ: a cached position answers what was decoded first.
        let again = d
            .resolve(vec![
                row(1, "evt_01JDX2M4Q8R5T7V9W1Y3Z5B7E2"),
                row(2, "evt_01JDX2M4Q8R5T7V9W1Y3Z5B7E3"),
            ])
            .unwrap();
        assert!(Arc::ptr_eq(&first[0].event, &again[0].event));
        assert_eq!(
            again[0].event.event_id.as_str(),
            "evt_01JDX2M4Q8R5T7V9W1Y3Z5B7E1"
        );
        assert_eq!(again.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(
            &*again[1].encoded,
            &row(2, "evt_01JDX2M4Q8R5T7V9W1Y3Z5B7E3").1[..]
        );
    }

    #[test]
    fn a_committed_event_is_served_as_the_writer_put_it() {
        let d = Decoded::new(8);
        let (seq, body) = row(5, "evt_01JDX2M4Q8R5T7V9W1Y3Z5B7E1");
        let event = Arc::new(crate::streams::codec::decode(1, &body).unwrap());
        d.put(vec![StoredEvent {
            partition: 0,
            seq,
            event: event.clone(),
            encoded: body.clone().into(),
        }]);
        // Not decoded: the row read back (here, other bytes) is answered by what was put.
        let read = d
            .resolve(vec![
                (5, b"{not json".to_vec()),
                row(6, "evt_01JDX2M4Q8R5T7V9W1Y3Z5B7E2"),
            ])
            .unwrap();
        assert!(Arc::ptr_eq(&read[0].event, &event));
        assert_eq!(&*read[0].encoded, &body[..]);
        assert_eq!(
            read[1].event.event_id.as_str(),
            "evt_01JDX2M4Q8R5T7V9W1Y3Z5B7E2"
        );
    }

    #[test]
    fn the_cache_is_bounded_and_a_corrupt_row_is_an_error() {
        let d = Decoded::new(2);
        d.resolve(vec![row(1, "evt_01JDX2M4Q8R5T7V9W1Y3Z5B7E1")])
            .unwrap();
        d.resolve(vec![
            row(2, "evt_01JDX2M4Q8R5T7V9W1Y3Z5B7E2"),
            row(3, "evt_01JDX2M4Q8R5T7V9W1Y3Z5B7E3"),
        ])
        .unwrap();
        assert_eq!(d.lock().len(), 2);
        assert!(d.lock().peek(&1).is_none());
        let e = d.resolve(vec![(4, b"{not json".to_vec())]).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt(m) if m.starts_with("event 4")));
    }
}
