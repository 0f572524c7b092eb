//! [`Runtime`]: the tokio driver of one [`Endpoint`] over any [`Transport`].
//!
//! One task owns the endpoint and selects over inbound frames, the next timer and
//! application calls. Timers wait on the monotonic clock (the endpoint's are relative),
//! so a wall-clock step never stalls a layer. Sends run on their own tasks, at most
//! [`MAX_SENDS_IN_FLIGHT`] at once (beyond that a frame is dropped and counted: gossip
//! repairs the loss), so a slow peer never stalls the node. The driver knows no layer:
//! an application reaches its layers with [`RuntimeHandle::call`], and an [`Observer`]
//! sees events and timers (for telemetry) without the driver naming them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use knhk_security::{ReceivedFrame, SignatureVerifier};
use knhk_transport::{Inbound, Transport, TransportError, TransportStats};
use knhk_types::{AgentId, EnvelopeSigner, UnixMillis};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::endpoint::{Endpoint, Event, Output, Timer};
use crate::error::EndpointError;

/// Sends handed to the transport at once, at most; beyond this they are dropped and
/// counted in [`DriverStats::sends_dropped`].
pub const MAX_SENDS_IN_FLIGHT: usize = 1_024;

/// Sends in flight to any one peer, at most: a peer that never takes its frames (or
/// never grants a stream) stalls only its own sends, never the node's whole budget.
/// Beyond this, frames to it are dropped and counted in
/// [`DriverStats::sends_dropped_per_peer`].
pub const MAX_SENDS_PER_PEER: usize = 32;

/// Most inbound frames handled as one burst: what is already queued when the driver
/// takes a frame goes through the gate with it, so their signatures cost one ed25519
/// batch (about 2.5× cheaper per signature at 64). A burst never waits for frames.
pub const MAX_BURST: usize = 64;

/// Counters kept by the driver itself (not by the endpoint or any layer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Frames dropped because [`MAX_SENDS_IN_FLIGHT`] sends were already in flight.
    pub sends_dropped: u64,
    /// Frames dropped because [`MAX_SENDS_PER_PEER`] sends to their peer were already
    /// in flight.
    pub sends_dropped_per_peer: u64,
    /// Sends the transport reported as failed (unreachable peer, refused handshake…).
    pub sends_failed: u64,
}

/// What the driver lends a call or an observer: the endpoint, the time, the driver's
/// and the transport's counters.
pub struct Driven<'a, S, V> {
    /// The node.
    pub endpoint: &'a mut Endpoint<S, V>,
    /// The wall-clock time of this step.
    pub now: UnixMillis,
    /// The driver's counters.
    pub driver: DriverStats,
    /// The transport's counters.
    pub transport: TransportStats,
}

impl<S, V> std::fmt::Debug for Driven<'_, S, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driven")
            .field("now", &self.now)
            .field("driver", &self.driver)
            .finish_non_exhaustive()
    }
}

/// Watches a running node on behalf of the application: its events, its timers and the
/// time frames take. Every method has a default that does nothing.
pub trait Observer<S, V>: Send + 'static {
    /// The node has started.
    fn started(&mut self, node: &mut Driven<'_, S, V>) {
        let _ = node;
    }

    /// The node emitted `event`.
    fn event(&mut self, node: &mut Driven<'_, S, V>, event: Event) {
        let _ = (node, event);
    }

    /// One inbound frame took `elapsed` to handle.
    fn frame_handled(&mut self, elapsed: Duration) {
        let _ = elapsed;
    }

    /// `timer` is about to fire: the span returned is entered while it fires and while
    /// what it produced is carried out (events included).
    fn timer_span(&mut self, node: &mut Driven<'_, S, V>, timer: Timer) -> tracing::Span {
        let _ = (node, timer);
        tracing::Span::none()
    }

    /// `timer` fired and its outputs were carried out, inside `span`.
    fn timer_fired(&mut self, node: &mut Driven<'_, S, V>, timer: Timer, span: &tracing::Span) {
        let _ = (node, timer, span);
    }
}

/// Observes nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl<S, V> Observer<S, V> for NoObserver {}

type Call<S, V> = Box<dyn FnOnce(&mut Driven<'_, S, V>) + Send>;

enum Command<S, V> {
    Call(Call<S, V>),
    Shutdown(oneshot::Sender<()>),
}

/// The application's side of a running node: calls into the driver task.
pub struct RuntimeHandle<S, V> {
    id: AgentId,
    commands: mpsc::Sender<Command<S, V>>,
    task: Option<JoinHandle<()>>,
}

impl<S, V> std::fmt::Debug for RuntimeHandle<S, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeHandle")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<S, V> RuntimeHandle<S, V>
where
    S: EnvelopeSigner + Send + 'static,
    V: SignatureVerifier + Send + 'static,
{
    /// The node's identity.
    pub fn id(&self) -> AgentId {
        self.id
    }

    /// Runs `f` on the driver task with the node (then carries out what the node
    /// asked), and returns its result.
    ///
    /// Errors: [`EndpointError::Stopped`] if the driver has stopped.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Driven<'_, S, V>) -> R + Send + 'static,
    ) -> Result<R, EndpointError> {
        let (reply, answer) = oneshot::channel();
        let call: Call<S, V> = Box::new(move |node| {
            // The caller may have gone away; that is fine.
            let _ = reply.send(f(node));
        });
        self.commands
            .send(Command::Call(call))
            .await
            .map_err(|_| EndpointError::Stopped)?;
        answer.await.map_err(|_| EndpointError::Stopped)
    }

    /// Stops the node: no more timers, the transport closes.
    ///
    /// Errors: [`EndpointError::Stopped`] if it had already stopped.
    pub async fn shutdown(mut self) -> Result<(), EndpointError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Shutdown(reply))
            .await
            .map_err(|_| EndpointError::Stopped)?;
        answer.await.map_err(|_| EndpointError::Stopped)?;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        Ok(())
    }
}

impl<S, V> Drop for RuntimeHandle<S, V> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The task that owns a node.
pub struct Runtime<S, V, T, O> {
    endpoint: Endpoint<S, V>,
    transport: Arc<T>,
    observer: O,
    /// Deadlines on the monotonic clock, so a wall-clock step cannot stall timers.
    timers: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    timer_sequence: u64,
    sends: Arc<Semaphore>,
    /// Sends in flight per peer (a peer leaves the map when its last send ends).
    per_peer: Arc<Mutex<HashMap<AgentId, usize>>>,
    stats: DriverStats,
    failures: Arc<std::sync::atomic::AtomicU64>,
}

/// The node's wall clock.
pub fn wall_clock() -> UnixMillis {
    UnixMillis::from_system_time(SystemTime::now())
}

impl<S, V, T, O> Runtime<S, V, T, O>
where
    S: EnvelopeSigner + Send + 'static,
    V: SignatureVerifier + Send + 'static,
    T: Transport,
    O: Observer<S, V>,
{
    /// Starts `endpoint` (with whatever layers it holds) on a task of the current tokio
    /// runtime, over `transport`, watched by `observer`. Must be called inside a tokio
    /// runtime.
    pub fn spawn(endpoint: Endpoint<S, V>, transport: T, observer: O) -> RuntimeHandle<S, V> {
        let id = endpoint.id();
        let (commands, inbox) = mpsc::channel(256);
        let runtime = Self {
            endpoint,
            transport: Arc::new(transport),
            observer,
            timers: BinaryHeap::new(),
            timer_sequence: 0,
            sends: Arc::new(Semaphore::new(MAX_SENDS_IN_FLIGHT)),
            per_peer: Arc::default(),
            stats: DriverStats::default(),
            failures: Arc::default(),
        };
        let task = tokio::spawn(runtime.run(inbox));
        RuntimeHandle {
            id,
            commands,
            task: Some(task),
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command<S, V>>) {
        let now = wall_clock();
        self.endpoint.start(now);
        self.flush(now);
        self.with_node(now, |observer, node| observer.started(node));
        loop {
            let wait = self
                .timers
                .peek()
                .map(|Reverse((at, _, _))| at.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(3_600));
            tokio::select! {
                inbound = self.transport.recv() => match inbound {
                    Ok(inbound) => self.handle_inbound(inbound),
                    Err(_) => break,
                },
                () = tokio::time::sleep(wait) => self.fire_due_timers(),
                command = commands.recv() => match command {
                    Some(Command::Call(call)) => {
                        let now = wall_clock();
                        self.with_node(now, |_, node| call(node));
                        self.flush(now);
                    }
                    Some(Command::Shutdown(reply)) => {
                        let _ = reply.send(());
                        break;
                    }
                    None => break,
                },
            }
        }
        self.transport.close().await;
    }

    /// Handles `first` and whatever else is already queued behind it (up to
    /// [`MAX_BURST`] frames) as one burst, so the gate batches their signatures; a
    /// lone frame takes the single-frame path.
    fn handle_inbound(&mut self, first: Inbound) {
        let started = std::time::Instant::now();
        let mut burst = vec![first];
        while burst.len() < MAX_BURST {
            match self.transport.try_recv() {
                Some(inbound) => burst.push(inbound),
                None => break,
            }
        }
        let now = wall_clock();
        if let [inbound] = &burst[..] {
            self.endpoint.handle_frame_received(
                now,
                inbound.received_at,
                inbound.from,
                &inbound.frame,
            );
        } else {
            let frames: Vec<ReceivedFrame<'_>> = burst
                .iter()
                .map(|inbound| ReceivedFrame {
                    hop: inbound.from,
                    received_at: inbound.received_at,
                    frame: &inbound.frame,
                })
                .collect();
            self.endpoint.handle_frames_received(now, &frames);
        }
        // The histogram is per frame: a burst's time is shared among its frames.
        let share = started.elapsed() / u32::try_from(burst.len()).unwrap_or(u32::MAX);
        for _ in &burst {
            self.observer.frame_handled(share);
        }
        drop(burst);
        self.flush(now);
    }

    fn fire_due_timers(&mut self) {
        let monotonic = Instant::now();
        while let Some(Reverse((at, _, timer))) = self.timers.peek().copied() {
            if at > monotonic {
                break;
            }
            self.timers.pop();
            let now = wall_clock();
            let span = self.with_node(now, |observer, node| observer.timer_span(node, timer));
            let entered = span.enter();
            self.endpoint.handle_timer(now, timer);
            // What the timer produced (its events included) belongs to its span.
            self.flush(now);
            drop(entered);
            self.with_node(now, |observer, node| {
                observer.timer_fired(node, timer, &span)
            });
        }
    }

    fn with_node<R>(
        &mut self,
        now: UnixMillis,
        f: impl FnOnce(&mut O, &mut Driven<'_, S, V>) -> R,
    ) -> R {
        self.stats.sends_failed = self.failures.load(std::sync::atomic::Ordering::Relaxed);
        let mut node = Driven {
            endpoint: &mut self.endpoint,
            now,
            driver: self.stats,
            transport: self.transport.stats(),
        };
        f(&mut self.observer, &mut node)
    }

    /// Carries out everything the endpoint asked for.
    fn flush(&mut self, now: UnixMillis) {
        while let Some(output) = self.endpoint.poll_output() {
            match output {
                Output::Send { to, frame } => self.send(to, frame),
                Output::SetTimer { after, timer } => {
                    self.timer_sequence += 1;
                    let at = Instant::now() + after;
                    self.timers.push(Reverse((at, self.timer_sequence, timer)));
                }
                Output::Event(event) => {
                    if let Event::Banned { peer, duration } = &event {
                        // Cut the banned peer off at the transport: its frames are then
                        // not even read.
                        self.transport.block(*peer, *duration);
                    }
                    self.with_node(now, |observer, node| observer.event(node, event));
                }
            }
        }
    }

    /// Hands a frame to the transport on its own task, so a slow or unreachable peer
    /// never stalls the node; beyond `MAX_SENDS_IN_FLIGHT` the frame is dropped.
    fn send(&mut self, to: AgentId, frame: Vec<u8>) {
        let Ok(permit) = self.sends.clone().try_acquire_owned() else {
            self.stats.sends_dropped += 1;
            return;
        };
        {
            let mut per_peer = self.per_peer.lock().unwrap_or_else(PoisonError::into_inner);
            let in_flight = per_peer.entry(to).or_insert(0);
            if *in_flight >= MAX_SENDS_PER_PEER {
                self.stats.sends_dropped_per_peer += 1;
                return;
            }
            *in_flight += 1;
        }
        let transport = self.transport.clone();
        let failures = self.failures.clone();
        let per_peer = self.per_peer.clone();
        tokio::spawn(async move {
            if let Err(error) = transport.send(to, Bytes::from(frame)).await {
                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                log_send_error(to, &error);
            }
            let mut per_peer = per_peer.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(in_flight) = per_peer.get_mut(&to) {
                *in_flight = in_flight.saturating_sub(1);
                if *in_flight == 0 {
                    per_peer.remove(&to);
                }
            }
            drop(permit);
        });
    }
}

fn log_send_error(to: AgentId, error: &TransportError) {
    tracing::debug!(peer = %to.short(), %error, "send failed");
}
