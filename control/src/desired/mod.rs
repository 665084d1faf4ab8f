//! Where the desired state comes from: a directory of manifests
//! ([`manifest`], polled) or a Kubernetes API server ([`watch`], watch
//! streams). Either runs as a task of its own that publishes whole
//! [`Desired`] states; [`Source::next_desired`] hands out the newest.
//!
//! It may depend on the core's plan types ([`crate::core::plan`]), the
//! custom resources ([`crate::crd`]) and the store that keeps manifest
//! versions ([`crate::checkpoint`]); never on the process glue.

pub mod latest;
pub mod manifest;
pub mod watch;

use std::path::Path;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::checkpoint::{Store, StoreError};
use crate::core::plan::Desired;

use self::latest::{Latest, Publisher, latest};
use self::manifest::{ManifestDir, Versions};

/// Why the source of desired state stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("manifest versions: {0}")]
    Store(#[from] StoreError),
    #[error("the Kubernetes watch ended")]
    WatchEnded,
    #[error("the source task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The newest desired state, from a task of its own.
#[derive(Debug)]
pub struct Source {
    latest: Latest,
    task: JoinHandle<Result<(), SourceError>>,
}

impl Source {
    /// Polls the manifest directory `dir` every `poll`; versions are kept
    /// in `store`.
    pub fn manifests(dir: &Path, store: Store, poll: Duration) -> Result<Source, SourceError> {
        let versions = Versions::load(&store)?;
        let (tx, latest) = latest();
        let dir = ManifestDir::new(dir);
        let task = tokio::spawn(poll_dir(dir, versions, store, poll, tx));
        Ok(Source { latest, task })
    }

    /// Watches the API server behind `client`.
    pub fn kube(client: ::kube::Client) -> Source {
        let (tx, latest) = latest();
        let task = tokio::spawn(async move {
            watch::watch_desired(client, tx).await;
            Err(SourceError::WatchEnded)
        });
        Source { latest, task }
    }

    /// The next desired state (the first one once the source has read
    /// everything). Cancel-safe: a state published meanwhile is kept.
    pub async fn next_desired(&mut self) -> Result<Desired, SourceError> {
        tokio::select! {
            biased;
            desired = self.latest.next() => Ok(desired),
            ended = &mut self.task => Err(match ended {
                Ok(Ok(())) => SourceError::WatchEnded,
                Ok(Err(e)) => e,
                Err(e) => e.into(),
            }),
        }
    }
}

/// Scans `dir` now and then every `poll`, and publishes each changed state.
/// The scan and the version writes run on a blocking thread.
async fn poll_dir(
    dir: ManifestDir,
    versions: Versions,
    store: Store,
    poll: Duration,
    tx: Publisher,
) -> Result<(), SourceError> {
    let mut state = Some((dir, versions));
    let mut first = true;
    let mut interval = tokio::time::interval(poll);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let (mut dir, mut versions) = state.take().expect("put back after each scan");
        let store = store.clone();
        let (dir, versions, desired) = tokio::task::spawn_blocking(move || {
            let (objects, problems) = dir.scan();
            for p in &problems {
                tracing::error!("{p}");
            }
            // The first state is published even when the directory could
            // not be read (an empty one).
            let desired = match objects {
                Some(objects) => versions.apply(&store, objects, clock::unix_ms()).map(Some),
                None if first => versions
                    .apply(&store, Vec::new(), clock::unix_ms())
                    .map(Some),
                None => Ok(None),
            };
            (dir, versions, desired)
        })
        .await?;
        state = Some((dir, versions));
        first = false;
        if let Some(desired) = desired?
            && !tx.publish(desired)
        {
            return Ok(());
        }
    }
}
