//! A watch served: what changed after the client's `resourceVersion` (or
//! everything, as ADDED, from 0 or for a streaming list, whose end is
//! marked by the `k8s.io/initial-events-end` bookmark), then live changes
//! until `timeoutSeconds`, with bookmarks when asked (after a quiet minute
//! and as the watch ends). A resume from before the store's compaction
//! gets the API server's 410 as an ERROR event.

use std::time::Duration;

use futures_lite::StreamExt as _;
use monoio::io::AsyncWriteRent;
use serde_json::json;

use super::{Request, Resource, Selection, Selector, Source, http, status_json};
use crate::store::{Change, ChangeType};

/// Default watch length when the client names none.
const DEFAULT_WATCH_SECONDS: u64 = 1800;

/// What a watch asks for.
pub(super) struct Watch {
    pub resource: Resource,
    pub namespace: Option<String>,
    pub selector: Selector,
    /// Each object sent as a one-row Table (`kubectl get -w`).
    pub as_table: bool,
}

pub(super) async fn watch<S: AsyncWriteRent>(
    stream: &mut S,
    req: &Request,
    shared: &Source,
    w: Watch,
) -> std::io::Result<()> {
    let (r, namespace) = (w.resource, w.namespace.as_deref());
    let from: u64 = req
        .param("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let seconds = req
        .param("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_WATCH_SECONDS);
    // A streaming list (client-go's WatchList, kube-rs' streaming_lists):
    // the current state as ADDED, then a bookmark that marks its end.
    let initial = req.param("sendInitialEvents") == Some("true");
    // A resume from before the store's compaction cannot be replayed: the
    // API server's 410 as a watch event, and the client lists again.
    if from > 0 && !initial {
        let replayable = shared
            .store
            .check_replayable(from)
            .map_err(std::io::Error::other)?;
        if let Err(too_old) = replayable {
            http::write_stream_head(stream, "application/json").await?;
            let status = status_json(410, "Expired", &too_old.to_string(), None);
            let event = format!(
                r#"{{"type":"ERROR","object":{}}}"#,
                String::from_utf8_lossy(&status)
            );
            http::write_chunk(stream, format!("{event}\n").as_bytes()).await?;
            return http::write_chunk(stream, b"").await;
        }
    }
    // Subscribe before reading the store: both happen without a yield in
    // between, so nothing is missed or reordered.
    let rx = shared.watches.borrow_mut().subscribe(r.kind, namespace);
    let listed_rv = shared
        .store
        .max_resource_version()
        .map_err(std::io::Error::other)?;
    let backlog = if from == 0 || initial {
        shared.store.list(r.kind, namespace).map(|objs| {
            objs.into_iter()
                .map(|object| Change {
                    change: ChangeType::Added,
                    object,
                })
                .collect()
        })
    } else {
        shared.store.changes_since(r.kind, namespace, from)
    };
    let backlog = backlog.map_err(std::io::Error::other)?;
    http::write_stream_head(stream, "application/json").await?;
    let mut selection = Selection::new(from != 0 && !initial);
    let mut sent = from;
    for c in backlog {
        sent = sent.max(c.object.resource_version);
        if let Some(line) = shared.event(&c, &w, &mut selection) {
            http::write_chunk(stream, &line).await?;
        }
    }
    if initial {
        sent = sent.max(listed_rv);
        http::write_chunk(stream, &bookmark(r, sent, true)).await?;
    }
    let bookmarks = matches!(req.param("allowWatchBookmarks"), Some("true" | "1"));
    let mut live = Live {
        rx,
        sent,
        selection,
    };
    live.follow(stream, shared, &w, Duration::from_secs(seconds), bookmarks)
        .await?;
    http::write_chunk(stream, b"").await
}

/// How long a watch that asked for bookmarks goes without an event before
/// it gets one (the API server sends one about every minute).
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// What a live watch waits for.
enum Next {
    Change((Change, bool)),
    /// The daemon closed the watches.
    Closed,
    /// The watch's time is up.
    End,
    /// A minute without an event.
    Quiet,
}

/// A watch past its backlog: the live changes and what it has sent.
struct Live {
    rx: futures_channel::mpsc::UnboundedReceiver<(Change, bool)>,
    /// The highest resourceVersion sent.
    sent: u64,
    selection: Selection,
}

impl Live {
    /// Sends live changes for `seconds`; with `bookmarks`, a bookmark after
    /// each quiet minute and one as the watch ends, at the store's version
    /// once every change already committed has been sent.
    async fn follow<S: AsyncWriteRent>(
        &mut self,
        stream: &mut S,
        shared: &Source,
        w: &Watch,
        length: Duration,
        bookmarks: bool,
    ) -> std::io::Result<()> {
        let deadline = monoio::time::sleep(length);
        futures_lite::pin!(deadline);
        loop {
            let next = monoio::select! {
                c = self.rx.next() => c.map_or(Next::Closed, Next::Change),
                _ = &mut deadline => Next::End,
                _ = monoio::time::sleep(BOOKMARK_EVERY) => Next::Quiet,
            };
            match next {
                Next::Change(c) => self.send(stream, shared, w, c).await?,
                Next::Closed => return Ok(()),
                Next::Quiet if !bookmarks => {}
                Next::Quiet | Next::End => {
                    if bookmarks {
                        self.bookmark(stream, shared, w).await?;
                    }
                    if matches!(next, Next::End) {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Every change already committed, then a bookmark at the store's
    /// version: all on this thread, so nothing commits in between.
    async fn bookmark<S: AsyncWriteRent>(
        &mut self,
        stream: &mut S,
        shared: &Source,
        w: &Watch,
    ) -> std::io::Result<()> {
        while let Ok(c) = self.rx.try_recv() {
            self.send(stream, shared, w, c).await?;
        }
        let rv = shared
            .store
            .max_resource_version()
            .map_err(std::io::Error::other)?;
        self.sent = self.sent.max(rv);
        http::write_chunk(stream, &bookmark(w.resource, self.sent, false)).await
    }

    async fn send<S: AsyncWriteRent>(
        &mut self,
        stream: &mut S,
        shared: &Source,
        w: &Watch,
        (c, status_only): (Change, bool),
    ) -> std::io::Result<()> {
        if !status_only && c.object.resource_version <= self.sent && c.change != ChangeType::Deleted
        {
            return Ok(());
        }
        self.sent = self.sent.max(c.object.resource_version);
        match shared.event(&c, w, &mut self.selection) {
            Some(line) => http::write_chunk(stream, &line).await,
            None => Ok(()),
        }
    }
}

/// A BOOKMARK event at `rv`; `initial_end` marks the end of a streaming
/// list's initial events.
fn bookmark(r: Resource, rv: u64, initial_end: bool) -> Vec<u8> {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let bookmark = json!({"type": "BOOKMARK", "object": {
        "kind": r.type_name, "apiVersion": r.api_version, "metadata": metadata,
    }});
    let mut line = bookmark.to_string().into_bytes();
    line.push(b'\n');
    line
}
