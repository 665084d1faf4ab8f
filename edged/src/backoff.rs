//! The kubelet's back-off (its `flowcontrol.Backoff`): after a failure at
//! time t, the next try waits `delay` from t; each failure within the
//! window doubles the delay up to `max`; a quiet spell of twice `max`
//! starts over at `initial`.

use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial_ms: u64,
    max_ms: u64,
    entries: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    delay_ms: u64,
    last_ms: u64,
}

impl Backoff {
    /// The kubelet's crash-loop and image-pull back-off: 10 s doubling to 5 min.
    pub fn kubelet() -> Backoff {
        Backoff::new(10_000, 300_000)
    }

    pub fn new(initial_ms: u64, max_ms: u64) -> Backoff {
        Backoff {
            initial_ms,
            max_ms,
            entries: BTreeMap::new(),
        }
    }

    /// The instant before which `key` must not be tried again after an
    /// event at `event_ms`, if that is later than `now_ms`.
    pub fn wait_until(&self, key: &str, event_ms: u64, now_ms: u64) -> Option<u64> {
        let e = self.entries.get(key)?;
        let until = event_ms.saturating_add(e.delay_ms);
        (now_ms < until).then_some(until)
    }

    /// Records a try after the event at `event_ms`: the delay the next one
    /// will wait.
    pub fn next(&mut self, key: &str, event_ms: u64) -> u64 {
        let (initial, max) = (self.initial_ms, self.max_ms);
        let e = self.entries.entry(key.to_owned()).or_insert(Entry {
            delay_ms: 0,
            last_ms: event_ms,
        });
        let expired = event_ms.saturating_sub(e.last_ms) > 2 * max;
        e.delay_ms = if e.delay_ms == 0 || expired {
            initial
        } else {
            (e.delay_ms * 2).min(max)
        };
        e.last_ms = event_ms;
        e.delay_ms
    }

    /// The delay `key` is at (0 when it has none).
    pub fn delay(&self, key: &str) -> u64 {
        self.entries.get(key).map_or(0, |e| e.delay_ms)
    }

    /// Forgets every key starting with `prefix` (a pod's containers).
    pub fn forget_prefix(&mut self, prefix: &str) {
        self.entries.retain(|k, _| !k.starts_with(prefix));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_retry_is_immediate_then_the_delay_doubles_to_the_cap() {
        let mut b = Backoff::kubelet();
        assert_eq!(
            b.wait_until("c", 0, 0),
            None,
            "no back-off before the first restart"
        );
        let mut delays = Vec::new();
        let mut t = 0;
        for _ in 0..8 {
            delays.push(b.next("c", t));
            t += b.delay("c") + 1;
        }
        assert_eq!(
            delays,
            [
                10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000, 300_000
            ]
        );
    }

    #[test]
    fn a_failure_waits_from_when_it_happened() {
        let mut b = Backoff::kubelet();
        b.next("c", 1_000);
        assert_eq!(b.wait_until("c", 5_000, 6_000), Some(15_000));
        assert_eq!(b.wait_until("c", 5_000, 15_000), None);
        assert_eq!(b.wait_until("other", 5_000, 6_000), None);
    }

    #[test]
    fn a_long_quiet_spell_starts_over() {
        let mut b = Backoff::kubelet();
        b.next("c", 0);
        b.next("c", 20_000);
        assert_eq!(b.delay("c"), 20_000);
        assert_eq!(b.next("c", 20_000 + 600_001), 10_000);
        b.forget_prefix("c");
        assert_eq!(b.delay("c"), 0);
    }
}
