//! Settings that change while paycore runs (a reload on SIGHUP or `POST /admin/reload`): each
//! holder keeps its part behind a `Live`, reads the current value per use, and the reload
//! swaps in a new one it built and checked beforehand. A reader holds the value it read for as
//! long as it needs it, so one request never sees two versions.

use std::sync::{Arc, RwLock};

/// A value replaced whole, never changed in place.
pub struct Live<T>(RwLock<Arc<T>>);

impl<T> Live<T> {
    /// Starts with `value`.
    pub fn new(value: T) -> Self {
        Self(RwLock::new(Arc::new(value)))
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        // A poisoned lock still holds a whole value: `set` only assigns an `Arc`.
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces the value; readers holding the old one keep it until they drop it.
    pub fn set(&self, value: T) {
        let value = Arc::new(value);
        match self.0.write() {
            Ok(mut g) => *g = value,
            Err(p) => *p.into_inner() = value,
        }
    }
}

impl<T: Default> Default for Live<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> std::fmt::Debug for Live<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::Live;

    #[test]
    fn a_reader_keeps_the_value_it_read_across_a_set() {
        let live = Live::new(vec![1]);
        let before = live.get();
        live.set(vec![2]);
        assert_eq!(*before, vec![1]);
        assert_eq!(*live.get(), vec![2]);
    }
}
