//! The hand-over of desired states from a source task to the loop: one
//! slot holding the newest state not yet taken. A newer state replaces it;
//! the loop takes it by value, so a state of tens of thousands of objects
//! is never copied on the way and only one waits at a time.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::core::plan::Desired;

#[derive(Debug, Default)]
struct Slot {
    state: Mutex<Option<Desired>>,
    ready: Notify,
}

/// The source's end: publishes states.
#[derive(Debug)]
pub struct Publisher(Arc<Slot>);

/// The loop's end: takes the newest state.
#[derive(Debug)]
pub struct Latest(Arc<Slot>);

/// A connected pair.
pub fn latest() -> (Publisher, Latest) {
    let slot = Arc::new(Slot::default());
    (Publisher(slot.clone()), Latest(slot))
}

impl Publisher {
    /// Replaces the state waiting to be taken, if any. Returns false when
    /// the loop's end is gone (nothing will take it).
    pub fn publish(&self, desired: Desired) -> bool {
        if Arc::strong_count(&self.0) == 1 {
            return false;
        }
        *self.0.state.lock().unwrap_or_else(|p| p.into_inner()) = Some(desired);
        self.0.ready.notify_one();
        true
    }
}

impl Latest {
    /// The newest state not yet taken, waiting for one. Cancel-safe: a
    /// state published meanwhile stays in the slot.
    pub async fn next(&self) -> Desired {
        loop {
            if let Some(d) = self.try_take() {
                return d;
            }
            self.0.ready.notified().await;
        }
    }

    /// The newest state not yet taken, if one is waiting.
    pub fn try_take(&self) -> Option<Desired> {
        self.0
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::plan::DesiredObject;
    use schema::records::ObjectKey;

    fn state(rv: u64) -> Desired {
        let mut d = Desired::default();
        let object = DesiredObject {
            rv,
            value: serde_json::Value::Null,
            content: Vec::new().into(),
        };
        d.objects
            .insert(ObjectKey::new("pod", "default", "a"), object.into());
        d
    }

    #[tokio::test]
    async fn the_newest_state_is_taken_once_and_older_ones_are_dropped() {
        let (publisher, latest) = latest();
        assert!(publisher.publish(state(1)));
        assert!(publisher.publish(state(2)));
        let rv = |d: &Desired| d.objects.values().next().map(|o| o.rv);
        assert_eq!(rv(&latest.next().await), Some(2));
        assert!(latest.try_take().is_none(), "taken, not copied");
        let waiting = tokio::spawn(async move { latest.next().await });
        tokio::task::yield_now().await;
        assert!(publisher.publish(state(3)));
        assert_eq!(rv(&waiting.await.unwrap()), Some(3));
        assert!(!publisher.publish(state(4)), "the loop's end is gone");
    }
}
