//! [`StoreWriter`]: one thread that commits to the [`Store`], taking every batch queued
//! meanwhile into the same transaction (group commit), so many concurrent writes cost
//! one fsync.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::error::StoreError;
use crate::store::{Batch, Store};

/// Batches waiting for the writer before senders wait.
const QUEUE: usize = 1_024;
/// Batches taken into one transaction at most.
const GROUP: usize = 256;

struct Job {
    batch: Batch,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// Counters of a [`StoreWriter`].
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Batches written (several per commit under load).
    pub batches: AtomicU64,
    /// Commits that failed.
    pub failures: AtomicU64,
}

/// The handle to the writer thread. Dropping every handle lets the thread finish what
/// is queued and stop.
#[derive(Clone, Debug)]
pub struct StoreWriter {
    jobs: mpsc::Sender<Job>,
    stats: Arc<WriterStats>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("entries", &self.batch.entries.len())
            .finish_non_exhaustive()
    }
}

impl StoreWriter {
    /// Starts the writer thread for `store`. Returns the handle and the thread, which
    /// ends once every handle is dropped and the queue is written.
    ///
    /// Errors: [`StoreError::Io`] if the thread cannot be started.
    pub fn spawn(store: Store) -> Result<(Self, std::thread::JoinHandle<()>), StoreError> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        let path = store.path().to_owned();
        let thread = std::thread::Builder::new()
            .name("knhk-store".into())
            .spawn(move || run(&store, queue, &thread_stats))
            .map_err(|source| StoreError::Io { path, source })?;
        Ok((Self { jobs, stats }, thread))
    }

    /// Writes `batch` and returns once it is on disk (fsynced).
    ///
    /// Errors: [`StoreError::Io`] if the commit failed (the reason from the store),
    /// [`StoreError::Stopped`] if the writer has stopped.
    pub async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                batch,
                done: Some(done),
            })
            .await
            .map_err(|_| StoreError::Stopped)?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(StoreError::Io {
                path: std::path::PathBuf::from(crate::store::FILE_NAME),
                source: std::io::Error::other(reason),
            }),
            Err(_) => Err(StoreError::Stopped),
        }
    }

    /// Queues `batch` without waiting for the disk (waits only while the queue is full).
    ///
    /// Errors: [`StoreError::Stopped`] if the writer has stopped.
    pub async fn submit(&self, batch: Batch) -> Result<(), StoreError> {
        self.jobs
            .send(Job { batch, done: None })
            .await
            .map_err(|_| StoreError::Stopped)
    }

    /// The writer's counters.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }
}

fn run(store: &Store, mut queue: mpsc::Receiver<Job>, stats: &WriterStats) {
    while let Some(first) = queue.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < GROUP {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut batch = Batch::default();
        let mut waiting = Vec::new();
        for job in jobs {
            batch.absorb(job.batch);
            waiting.extend(job.done);
            stats.batches.fetch_add(1, Ordering::Relaxed);
        }
        let outcome = store.commit(&batch).map_err(|error| error.to_string());
        match &outcome {
            Ok(()) => stats.commits.fetch_add(1, Ordering::Relaxed),
            Err(error) => {
                tracing::error!(%error, "storing state failed");
                stats.failures.fetch_add(1, Ordering::Relaxed)
            }
        };
        for done in waiting {
            // A waiter that went away does not need the answer.
            let _ = done.send(outcome.clone());
        }
    }
}
