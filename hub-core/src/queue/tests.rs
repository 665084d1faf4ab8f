//! Unit and model-based tests of [`NodeQueue`].

use std::collections::BTreeMap;

use proptest::prelude::*;
use schema::{Header, Route};

use super::*;

fn key(name: &str) -> ObjectKey {
    ObjectKey {
        kind: "Pod".into(),
        namespace: "default".into(),
        name: name.into(),
    }
}

fn msg(id: &str, rv: u64, operation: &str) -> Message {
    Message {
        header: Header {
            id: id.into(),
            resource_version: rv,
            ..Header::default()
        },
        route: Route {
            operation: operation.into(),
            ..Route::default()
        },
        content: b"{}".to_vec(),
    }
}

fn drain(q: &mut NodeQueue) -> Vec<String> {
    std::iter::from_fn(|| q.pop_front())
        .map(|m| m.header.id)
        .collect()
}

#[test]
fn coalesces_updates_of_one_key_to_the_newest() {
    let mut q = NodeQueue::new(1 << 20);
    assert_eq!(
        q.push(key("a"), msg("v1", 1, "update")),
        PushOutcome::Queued
    );
    for rv in 2..=10 {
        let outcome = q.push(key("a"), msg(&format!("v{rv}"), rv, "update"));
        assert_eq!(outcome, PushOutcome::Replaced { previous: rv - 1 });
    }
    assert_eq!(q.len(), 1);
    assert_eq!(q.bytes(), NodeQueue::cost_of(&msg("v10", 10, "update")));
    assert_eq!(drain(&mut q), ["v10"]);
}

#[test]
fn drops_equal_or_older_version_as_stale() {
    let mut q = NodeQueue::new(1 << 20);
    assert_eq!(
        q.push(key("a"), msg("v5", 5, "update")),
        PushOutcome::Queued
    );
    let stale = PushOutcome::Stale { known: 5 };
    assert_eq!(q.push(key("a"), msg("v5bis", 5, "update")), stale);
    assert_eq!(q.push(key("a"), msg("v3", 3, "update")), stale);
    assert_eq!(q.push(key("a"), msg("d4", 4, "delete")), stale);
    assert_eq!(drain(&mut q), ["v5"]);
}

#[test]
fn delete_supersedes_pending_update_and_wins_ties() {
    let mut q = NodeQueue::new(1 << 20);
    let _ = q.push(key("a"), msg("v5", 5, "update"));
    let outcome = q.push(key("a"), msg("d5", 5, "delete"));
    assert_eq!(outcome, PushOutcome::Replaced { previous: 5 });
    // An update of the same version after it is the object needed again
    // (a delete that removes it for good carries a newer version).
    let outcome = q.push(key("a"), msg("v5bis", 5, "update"));
    assert_eq!(outcome, PushOutcome::Replaced { previous: 5 });
    assert_eq!(drain(&mut q), ["v5bis"]);
}

#[test]
fn unversioned_messages_always_replace() {
    let mut q = NodeQueue::new(1 << 20);
    let _ = q.push(key("a"), msg("v9", 9, "update"));
    let outcome = q.push(key("a"), msg("u0", 0, "update"));
    assert_eq!(outcome, PushOutcome::Replaced { previous: 9 });
    let outcome = q.push(key("a"), msg("v1", 1, "update"));
    assert_eq!(outcome, PushOutcome::Replaced { previous: 0 });
    q.acknowledged(&key("a"), 7);
    assert_eq!(
        q.push(key("a"), msg("u0bis", 0, "update")),
        PushOutcome::Replaced { previous: 1 }
    );
    assert_eq!(drain(&mut q), ["u0bis"]);
}

#[test]
fn drops_versions_at_or_below_acknowledged() {
    let mut q = NodeQueue::new(1 << 20);
    q.acknowledged(&key("a"), 7);
    q.acknowledged(&key("a"), 4); // never goes down
    let stale = PushOutcome::Stale { known: 7 };
    assert_eq!(q.push(key("a"), msg("v7", 7, "update")), stale);
    assert_eq!(q.push(key("a"), msg("v6", 6, "update")), stale);
    assert_eq!(q.push(key("a"), msg("d6", 6, "delete")), stale);
    assert!(q.is_empty());
    // A delete carrying the acknowledged version is still delivered.
    assert_eq!(
        q.push(key("a"), msg("d7", 7, "delete")),
        PushOutcome::Queued
    );
    assert_eq!(drain(&mut q), ["d7"]);
    q.forget(&key("a"));
    assert_eq!(
        q.push(key("a"), msg("v2", 2, "update")),
        PushOutcome::Queued
    );
}

#[test]
fn pop_discards_entries_acknowledged_while_pending() {
    let mut q = NodeQueue::new(1 << 20);
    let _ = q.push(key("a"), msg("a3", 3, "update"));
    let _ = q.push(key("b"), msg("b3", 3, "update"));
    q.acknowledged(&key("a"), 5);
    assert_eq!(drain(&mut q), ["b3"]);
    // What is left is the memory of what the node holds.
    assert_eq!((q.len(), q.bytes()), (0, acked_cost(&key("a"))));
}

#[test]
fn pops_in_fifo_order_across_keys() {
    let mut q = NodeQueue::new(1 << 20);
    for name in ["a", "b", "c"] {
        let _ = q.push(key(name), msg(&format!("{name}1"), 1, "update"));
    }
    // A replaced entry keeps its key's place.
    let _ = q.push(key("a"), msg("a2", 2, "update"));
    let (k, m) = q.pop_front_with_key().expect("three entries pending");
    assert_eq!((k, m.header.id.as_str()), (key("a"), "a2"));
    let _ = q.push(key("a"), msg("a3", 3, "update"));
    assert_eq!(drain(&mut q), ["b1", "c1", "a3"]);
}

#[test]
fn overflow_clears_and_refuses_until_resync_started() {
    let cost = NodeQueue::cost_of(&msg("x", 1, "update"));
    let mut q = NodeQueue::new(3 * cost);
    for name in ["a", "b", "c"] {
        assert_eq!(
            q.push(key(name), msg("x", 1, "update")),
            PushOutcome::Queued
        );
    }
    assert_eq!(q.bytes(), 3 * cost);
    let outcome = q.push(key("d"), msg("x", 1, "update"));
    assert_eq!(outcome, PushOutcome::Overflow { released: 3 });
    assert!(q.needs_resync());
    assert_eq!((q.len(), q.bytes(), q.pop_front()), (0, 0, None));
    let outcome = q.push(key("e"), msg("x", 1, "update"));
    assert_eq!(outcome, PushOutcome::Overflow { released: 0 });
    assert!(q.is_empty());
    q.resync_started();
    assert!(!q.needs_resync());
    assert_eq!(q.push(key("e"), msg("x", 1, "update")), PushOutcome::Queued);
    assert_eq!(q.len(), 1);
}

#[test]
fn bytes_return_to_zero_after_draining() {
    let mut q = NodeQueue::new(1 << 20);
    let m = |i: u64| msg(&format!("m{i}"), i + 1, "update");
    // 50 messages over 20 keys: the last 20 are the ones left pending.
    for i in 0..50u64 {
        let _ = q.push(key(&format!("k{}", i % 20)), m(i));
    }
    let expected: usize = (30..50).map(|i| NodeQueue::cost_of(&m(i))).sum();
    assert_eq!((q.len(), q.bytes()), (20, expected));
    assert_eq!(drain(&mut q).len(), 20);
    assert_eq!((q.len(), q.bytes()), (0, 0));
}

#[derive(Debug, Clone)]
enum Op {
    Push {
        key: u8,
        rv: u64,
        delete: bool,
        len: usize,
    },
    Pop,
    Ack {
        key: u8,
        rv: u64,
    },
    ResyncStarted,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, 0u64..12, prop::bool::weighted(0.2), 0usize..300)
            .prop_map(|(key, rv, delete, len)| Op::Push { key, rv, delete, len }),
        3 => Just(Op::Pop),
        1 => (0u8..4, 0u64..12).prop_map(|(key, rv)| Op::Ack { key, rv }),
        1 => Just(Op::ResyncStarted),
    ]
}

/// The reference: per key, the newest message pushed since the key was
/// last popped, in a BTreeMap, with the FIFO as a plain Vec.
#[derive(Default)]
struct Model {
    pending: BTreeMap<u8, (u64, bool, Message)>,
    order: Vec<u8>,
    acked: BTreeMap<u8, u64>,
    needs_resync: bool,
    bytes: usize,
    /// Bytes charged for `acked` (keys with a version above 0).
    acked_bytes: usize,
}

/// Whether `(rv, delete)` should win over the version `known`: written
/// independently of `is_stale`.
fn wins(rv: u64, delete: bool, known: u64, known_delete: bool) -> bool {
    rv == 0 || rv > known || (rv == known && (delete || known_delete))
}

fn name(k: u8) -> ObjectKey {
    key(&format!("k{k}"))
}

/// Applies `op` to the queue and the model, checking they agree.
fn step(q: &mut NodeQueue, model: &mut Model, i: usize, op: Op) -> Result<(), TestCaseError> {
    match op {
        Op::Push {
            key,
            rv,
            delete,
            len,
        } => {
            let operation = if delete { "delete" } else { "update" };
            let mut m = msg(&format!("{i}"), rv, operation);
            m.content = vec![b'x'; len];
            let outcome = q.push(name(key), m.clone());
            let acked = model.acked.get(&key).copied().unwrap_or(0);
            let pending = model
                .pending
                .get(&key)
                .map(|p| (p.0, NodeQueue::cost_of(&p.2), p.1));
            let freed = pending.map_or(0, |p| p.1);
            let pending = pending.map(|p| (p.0, p.1, p.2));
            let bytes = model.bytes - freed + NodeQueue::cost_of(&m);
            if model.needs_resync {
                prop_assert_eq!(outcome, PushOutcome::Overflow { released: 0 });
            } else if !wins(rv, delete, acked, false)
                || pending.is_some_and(|p| !wins(rv, delete, p.0, p.2))
            {
                prop_assert!(matches!(outcome, PushOutcome::Stale { .. }), "{outcome:?}");
            } else if bytes + model.acked_bytes > q.budget() {
                let released = model.pending.len();
                prop_assert_eq!(outcome, PushOutcome::Overflow { released });
                model.pending.clear();
                model.order.clear();
                model.bytes = 0;
                model.acked.clear();
                model.acked_bytes = 0;
                model.needs_resync = true;
            } else {
                model.bytes = bytes;
                if pending.is_none() {
                    model.order.push(key);
                }
                model.pending.insert(key, (rv, delete, m));
            }
        }
        Op::Pop => {
            let mut expected = None;
            while !model.order.is_empty() {
                let k = model.order.remove(0);
                if let Some((rv, delete, m)) = model.pending.remove(&k) {
                    model.bytes -= NodeQueue::cost_of(&m);
                    if wins(rv, delete, model.acked.get(&k).copied().unwrap_or(0), false) {
                        expected = Some((name(k), m));
                        break;
                    }
                }
            }
            prop_assert_eq!(q.pop_front_with_key(), expected);
        }
        Op::Ack { key, rv } => {
            q.acknowledged(&name(key), rv);
            let cost = acked_cost(&name(key));
            match model.acked.get_mut(&key) {
                Some(known) => *known = (*known).max(rv),
                None if rv > 0 && model.bytes + model.acked_bytes + cost <= q.budget() => {
                    model.acked.insert(key, rv);
                    model.acked_bytes += cost;
                }
                None => {}
            }
        }
        Op::ResyncStarted => {
            q.resync_started();
            model.needs_resync = false;
        }
    }
    prop_assert!(q.bytes() <= q.budget());
    prop_assert_eq!(q.bytes(), model.bytes + model.acked_bytes);
    prop_assert_eq!(q.acknowledged_len(), model.acked.len());
    prop_assert_eq!(q.len(), model.pending.len());
    prop_assert_eq!(q.needs_resync(), model.needs_resync);
    Ok(())
}

proptest! {
    #[test]
    fn matches_model_and_stays_within_budget(
        budget in 0usize..4000,
        ops in prop::collection::vec(op(), 0..300),
    ) {
        let mut q = NodeQueue::new(budget);
        let mut model = Model::default();
        for (i, op) in ops.into_iter().enumerate() {
            step(&mut q, &mut model, i, op)?;
        }
    }
}

#[test]
fn popping_for_send_makes_older_versions_stale_and_skips_superseded_ones() {
    let mut q = NodeQueue::new(1 << 20);
    let _ = q.push(key("a"), msg("a3", 3, "update"));
    let _ = q.push(key("b"), msg("b3", 3, "update"));
    let (k, m) = q.pop_for_send().unwrap();
    assert_eq!((k, m.header.id.as_str()), (key("a"), "a3"));
    // Version 3 of "a" is on its way: 2 is stale, 4 is news.
    assert!(matches!(
        q.push(key("a"), msg("a2", 2, "update")),
        PushOutcome::Stale { known: 3 }
    ));
    assert_eq!(
        q.push(key("a"), msg("a4", 4, "update")),
        PushOutcome::Queued
    );
    // "b" was acknowledged at 5 while pending: skipped, not sent.
    q.acknowledged(&key("b"), 5);
    let (_, m) = q.pop_for_send().unwrap();
    assert_eq!(m.header.id, "a4");
    assert!(q.pop_for_send().is_none());
    let remembered = acked_cost(&key("a")) + acked_cost(&key("b"));
    assert_eq!((q.len(), q.bytes()), (0, remembered));
}

#[test]
fn reset_forgets_what_the_node_held_so_a_snapshot_is_sent_whole() {
    let mut q = NodeQueue::new(1 << 20);
    let _ = q.push(key("a"), msg("a3", 3, "update"));
    assert!(q.pop_for_send().is_some());
    // The node lost its store: version 3 is news to it again.
    assert!(matches!(
        q.push(key("a"), msg("a3", 3, "update")),
        PushOutcome::Stale { known: 3 }
    ));
    q.reset_acknowledged();
    assert_eq!((q.acknowledged_len(), q.bytes()), (0, 0));
    assert_eq!(
        q.push(key("a"), msg("a3", 3, "update")),
        PushOutcome::Queued
    );
}

#[test]
fn an_acknowledged_delete_is_forgotten_unless_a_newer_version_followed() {
    let mut q = NodeQueue::new(1 << 20);
    let _ = q.push(key("a"), msg("d4", 4, "delete"));
    assert!(q.pop_for_send().is_some());
    q.forget_at(&key("a"), 4);
    assert_eq!((q.acknowledged_len(), q.bytes()), (0, 0));
    let _ = q.push(key("b"), msg("d4", 4, "delete"));
    assert!(q.pop_for_send().is_some());
    let _ = q.push(key("b"), msg("b5", 5, "insert"));
    assert!(q.pop_for_send().is_some());
    q.forget_at(&key("b"), 4);
    assert_eq!(q.acknowledged_len(), 1, "version 5 of b is still held");
}

#[test]
fn what_the_node_holds_counts_in_the_budget() {
    let cost = NodeQueue::cost_of(&msg("a1", 1, "update"));
    let mut q = NodeQueue::new(cost + acked_cost(&key("k0")) * 3 - 1);
    for i in 0..3 {
        let _ = q.push(key(&format!("k{i}")), msg("a1", 1, "update"));
        assert!(q.pop_for_send().is_some());
    }
    assert_eq!(q.acknowledged_len(), 3);
    // Three remembered objects leave no room for a pending one.
    assert!(matches!(
        q.push(key("x"), msg("x1", 1, "update")),
        PushOutcome::Overflow { .. }
    ));
    assert!(q.needs_resync());
    assert_eq!((q.acknowledged_len(), q.bytes()), (0, 0), "all given back");
}

#[test]
fn an_object_dropped_at_its_version_comes_back_at_that_version() {
    let mut q = NodeQueue::new(1 << 20);
    let _ = q.push(key("a"), msg("a4", 4, "update"));
    assert!(q.pop_for_send().is_some());
    // The node no longer needs "a": it is dropped at its version, 4 ...
    let _ = q.push(key("a"), msg("d4", 4, "delete"));
    assert!(q.pop_for_send().is_some());
    // ... and needed again before that was acknowledged: 4 is news.
    assert_eq!(
        q.push(key("a"), msg("a4", 4, "update")),
        PushOutcome::Queued
    );
    let (_, m) = q.pop_for_send().unwrap();
    assert_eq!(m.header.id, "a4");
    // Once it is sent, 4 again is stale.
    assert!(matches!(
        q.push(key("a"), msg("a4", 4, "update")),
        PushOutcome::Stale { known: 4 }
    ));
}
