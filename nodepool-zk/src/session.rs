//! One ZooKeeper session at a time: connecting, watching, and replacing
//! the session when it expires.
//!
//! A supervisor task owns the recursive watches and the session state. It
//! turns watched changes into [`StoreEvent`]s. After a disconnection the
//! session may survive, but the server's watches do not (they belong to
//! the connection) and `zookeeper-client` 0.11 does not set persistent
//! watches again when it reconnects (its `resend_watches` sends only the
//! one-shot kinds), so the supervisor adds them again itself, then
//! announces [`StoreEvent::Resync`] (ZooKeeper may have dropped events
//! meanwhile, ZOOKEEPER-4698). When the session expires it connects a new
//! one, sets the watches again, and announces [`StoreEvent::Resync`]. Locks
//! and ephemeral records of the old session are gone by then, as the
//! store's contract says.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use futures::stream::{self, SelectAll, Stream, StreamExt};
use tokio::sync::broadcast;
use zookeeper_client::{
    AddWatchMode, Client, EventType, PersistentWatcher, SessionState, StateWatcher, TlsOptions,
    WatchedEvent,
};

use crate::config::ZkConfig;
use crate::error::{Error, Result};
use crate::paths::{self, WATCHED_ROOTS};
use crate::tracked::{Outstanding, ZkClient};

/// How many events a lagging watcher may fall behind.
const EVENT_BUFFER: usize = 4096;
/// Longest pause between two reconnection attempts.
const MAX_RECONNECT_PAUSE: Duration = Duration::from_secs(10);
/// First pause before adding the watches again after a failed attempt on
/// a connection that came back; doubled up to [`MAX_RECONNECT_PAUSE`].
const REWATCH_PAUSE: Duration = Duration::from_millis(200);

/// The current client and what every handle of the store shares.
#[derive(Debug)]
pub(crate) struct Session {
    config: ZkConfig,
    tls: Option<TlsOptions>,
    client: RwLock<Option<Client>>,
    events: broadcast::Sender<nodepool_core::store::StoreEvent>,
    closed: AtomicBool,
    /// Requests of the store's operations not answered yet, across the
    /// sessions this one replaces.
    outstanding: Arc<Outstanding>,
}

/// Watched changes of one session, merged.
type EventStream = SelectAll<Pin<Box<dyn Stream<Item = WatchedEvent> + Send>>>;

impl Session {
    /// Connects, makes the chroot and the watched roots, sets the watches
    /// and starts the supervisor.
    pub(crate) async fn connect(config: ZkConfig) -> Result<Arc<Session>> {
        if config.hosts.is_empty() {
            return Err(Error::NoHosts);
        }
        let tls = match &config.tls {
            Some(tls) => Some(tls_options(tls)?),
            None => None,
        };
        let (client, watches) = open(&config, tls.clone()).await?;
        let state = client.state_watcher();
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let session = Arc::new(Session {
            config,
            tls,
            client: RwLock::new(Some(client)),
            events,
            closed: AtomicBool::new(false),
            outstanding: Arc::default(),
        });
        tokio::spawn(supervise(Arc::downgrade(&session), state, watches));
        Ok(session)
    }

    /// The current client, its requests counted; fails once the store is
    /// closed.
    pub(crate) fn client(&self) -> nodepool_core::Result<ZkClient> {
        Ok(ZkClient::new(
            self.raw_client()?,
            Arc::clone(&self.outstanding),
        ))
    }

    /// Requests of the store's operations handed to the client and not
    /// answered yet.
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding.get()
    }

    /// The current client itself, for the session's own setup.
    fn raw_client(&self) -> nodepool_core::Result<Client> {
        let guard = self.client.read().map_err(|_| poisoned())?;
        guard.clone().ok_or_else(|| {
            nodepool_core::Error::StoreUnavailable("the ZooKeeper store was closed".into())
        })
    }

    /// A receiver of the store's events.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<nodepool_core::store::StoreEvent> {
        self.events.subscribe()
    }

    /// The settings this session was opened with.
    pub(crate) fn config(&self) -> &ZkConfig {
        &self.config
    }

    /// TLS options built from the settings, if any.
    pub(crate) fn tls(&self) -> Option<TlsOptions> {
        self.tls.clone()
    }

    /// Ends the session: drops our client (ZooKeeper then removes our
    /// ephemeral nodes and locks) and waits until the server confirmed.
    pub(crate) async fn close(&self) -> nodepool_core::Result<()> {
        self.closed.store(true, Ordering::SeqCst);
        let client = self.client.write().map_err(|_| poisoned())?.take();
        let Some(client) = client else {
            return Ok(());
        };
        let mut state = client.state_watcher();
        drop(client);
        // Operations still running hold clones; the session closes when
        // the last one finishes.
        let wait = async {
            while !state.peek_state().is_terminated() {
                state.changed().await;
            }
        };
        let timeout = self.config.session_timeout.max(Duration::from_secs(1));
        if tokio::time::timeout(timeout, wait).await.is_err() {
            tracing::warn!("ZooKeeper session did not confirm its close within {timeout:?}");
        }
        Ok(())
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn publish(&self, event: nodepool_core::store::StoreEvent) {
        // No receivers is fine: nobody watches.
        let _ = self.events.send(event);
    }
}

/// Reads the PEM files of the TLS settings.
fn tls_options(tls: &crate::config::ZkTls) -> Result<TlsOptions> {
    let read = |what: &'static str, path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(|e| Error::Tls {
            what,
            path: path.to_owned(),
            message: e.to_string(),
        })
    };
    let ca = read("CA", &tls.ca)?;
    let cert = read("certificate", &tls.cert)?;
    let key = read("key", &tls.key)?;
    let options = TlsOptions::new().with_pem_ca(&ca).map_err(|e| Error::Tls {
        what: "CA",
        path: tls.ca.clone(),
        message: e.to_string(),
    })?;
    options
        .with_pem_identity(&cert, &key)
        .map_err(|e| Error::Tls {
            what: "certificate",
            path: tls.cert.clone(),
            message: e.to_string(),
        })
}

/// Opens a new session at the configured chroot (made if missing), makes
/// the watched roots and sets a persistent recursive watch on each.
async fn open(config: &ZkConfig, tls: Option<TlsOptions>) -> Result<(Client, EventStream)> {
    let hosts = config.connect_string();
    let connector = Client::connector().with_session_timeout(config.session_timeout);
    let connected = match tls {
        Some(tls) => connector.with_tls(tls).secure_connect(&hosts).await,
        None => connector.connect(&hosts).await,
    };
    let mut client = connected.map_err(|source| Error::Connect {
        hosts: hosts.clone(),
        source,
    })?;
    if let Some(chroot) = config.chroot.as_deref().filter(|c| *c != "/") {
        let chroot = chroot.trim_end_matches('/');
        make_dir(&client, chroot).await?;
        client = client
            .chroot(chroot.to_owned())
            .map_err(|_| Error::Chroot {
                chroot: chroot.to_owned(),
            })?;
    }
    for root in WATCHED_ROOTS {
        make_dir(&client, root).await?;
    }
    let watches = add_watches(&client).await?;
    Ok((client, watches))
}

/// Sets a persistent recursive watch on each watched root (which need not
/// exist), all requests sent at once, and merges their events.
async fn add_watches(client: &Client) -> Result<EventStream> {
    let watchers = futures::future::try_join_all(WATCHED_ROOTS.iter().map(|root| async move {
        client
            .watch(root, AddWatchMode::PersistentRecursive)
            .await
            .map_err(|source| Error::ZooKeeper {
                operation: "add watch",
                path: (*root).to_owned(),
                source,
            })
    }))
    .await?;
    let mut watches: EventStream = SelectAll::new();
    for watcher in watchers {
        watches.push(Box::pin(watched_events(watcher)));
    }
    Ok(watches)
}

async fn make_dir(client: &Client, path: &str) -> Result<()> {
    match client.mkdir(path, &crate::ops::DIRECTORY).await {
        Ok(()) | Err(zookeeper_client::Error::NodeExists) => Ok(()),
        Err(source) => Err(Error::ZooKeeper {
            operation: "create",
            path: path.to_owned(),
            source,
        }),
    }
}

/// The node events of a persistent watcher; ends at the session's end
/// (the watcher must not be polled after a terminal state).
fn watched_events(watcher: PersistentWatcher) -> impl Stream<Item = WatchedEvent> + Send {
    stream::unfold(Some(watcher), |watcher| async move {
        let mut watcher = watcher?;
        loop {
            let event = watcher.changed().await;
            if event.event_type != EventType::Session {
                return Some((event, Some(watcher)));
            }
            if event.session_state.is_terminated() {
                return None;
            }
        }
    })
}

/// How a session ended.
enum End {
    /// Expired or failed: open a new one.
    Lost,
    /// Closed by us, or the store is gone: stop.
    Stop,
}

/// Runs as long as the store exists: serves each session's events and
/// replaces expired sessions.
async fn supervise(session: Weak<Session>, mut state: StateWatcher, mut watches: EventStream) {
    loop {
        if let End::Stop = serve(&session, &mut state, &mut watches).await {
            return;
        }
        match reconnect(&session).await {
            Some((new_state, new_watches)) => {
                state = new_state;
                watches = new_watches;
            }
            None => return,
        }
    }
}

/// Forwards the events of one session until it ends; after each
/// reconnection of the session, sets the watches again and announces
/// [`StoreEvent::Resync`](nodepool_core::store::StoreEvent::Resync).
async fn serve(
    session: &Weak<Session>,
    state: &mut StateWatcher,
    watches: &mut EventStream,
) -> End {
    // The state the session was opened in is no news; every later
    // `SyncConnected` is a reconnection (the client reports changes only),
    // even when the `Disconnected` before it was coalesced away.
    let mut pending = Some(state.state());
    let mut disconnected = false;
    // When to add the watches again after a failed attempt.
    let mut rewatch_at: Option<tokio::time::Instant> = None;
    let mut rewatch_pause = REWATCH_PAUSE;
    loop {
        let changed = match pending.take() {
            Some(SessionState::SyncConnected | SessionState::ConnectedReadOnly) => None,
            Some(initial) => Some(initial),
            None => {
                let retry = rewatch_at.unwrap_or_else(far_future);
                tokio::select! {
                    event = watches.next(), if !watches.is_empty() => {
                        let Some(event) = event else { continue };
                        let Some(session) = session.upgrade() else { return End::Stop };
                        let put = event.event_type != EventType::NodeDeleted;
                        if let Some(event) = paths::event_for(&event.path, put) {
                            session.publish(event);
                        }
                        None
                    }
                    changed = state.changed() => Some(changed),
                    () = tokio::time::sleep_until(retry), if rewatch_at.is_some() => {
                        rewatch_at = None;
                        // A connection that is down again retries when it is back.
                        if matches!(
                            state.peek_state(),
                            SessionState::SyncConnected | SessionState::ConnectedReadOnly
                        ) {
                            Some(SessionState::SyncConnected)
                        } else {
                            None
                        }
                    }
                }
            }
        };
        let Some(changed) = changed else { continue };
        let Some(session) = session.upgrade() else {
            return End::Stop;
        };
        match changed {
            SessionState::Disconnected => {
                if !disconnected {
                    tracing::warn!("ZooKeeper connection lost; reconnecting");
                }
                disconnected = true;
                rewatch_at = None;
            }
            SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                if disconnected {
                    tracing::info!("ZooKeeper connection back; setting the watches again");
                    disconnected = false;
                }
                match rewatch(&session).await {
                    Ok(new_watches) => {
                        // The old watchers go with the old stream; the
                        // client keeps the server's watch for the new ones.
                        *watches = new_watches;
                        rewatch_at = None;
                        rewatch_pause = REWATCH_PAUSE;
                        tracing::info!("ZooKeeper watches set again; asking watchers to resync");
                        session.publish(nodepool_core::store::StoreEvent::Resync);
                    }
                    Err(e) => {
                        tracing::warn!(
                            error = %e,
                            pause = ?rewatch_pause,
                            "cannot set the ZooKeeper watches again; retrying"
                        );
                        rewatch_at = Some(tokio::time::Instant::now() + rewatch_pause);
                        rewatch_pause = (rewatch_pause * 2).min(MAX_RECONNECT_PAUSE);
                    }
                }
            }
            SessionState::Closed if session.is_closed() => return End::Stop,
            terminal => {
                if session.is_closed() {
                    return End::Stop;
                }
                tracing::warn!(state = %terminal, "ZooKeeper session ended; opening a new one");
                return End::Lost;
            }
        }
    }
}

/// Adds the watches again on the current client, within the session
/// timeout (a connection lost meanwhile fails the attempt).
async fn rewatch(session: &Session) -> std::result::Result<EventStream, String> {
    let client = session.raw_client().map_err(|e| e.to_string())?;
    let timeout = session.config().session_timeout.max(Duration::from_secs(1));
    match tokio::time::timeout(timeout, add_watches(&client)).await {
        Ok(Ok(watches)) => Ok(watches),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// An instant that never comes, for a disabled timer branch.
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400)
}

/// Opens a new session after the old one expired, with growing pauses;
/// announces [`StoreEvent::Resync`](nodepool_core::store::StoreEvent::Resync).
async fn reconnect(session: &Weak<Session>) -> Option<(StateWatcher, EventStream)> {
    let mut pause = Duration::from_millis(100);
    loop {
        let current = session.upgrade()?;
        if current.is_closed() {
            return None;
        }
        match open(current.config(), current.tls()).await {
            Ok((client, watches)) => {
                let state = client.state_watcher();
                match current.client.write() {
                    Ok(mut slot) => {
                        if current.is_closed() {
                            return None;
                        }
                        *slot = Some(client);
                    }
                    Err(_) => {
                        tracing::error!("ZooKeeper client lock poisoned; the store stops");
                        return None;
                    }
                }
                tracing::info!("new ZooKeeper session; asking watchers to resync");
                current.publish(nodepool_core::store::StoreEvent::Resync);
                return Some((state, watches));
            }
            Err(e) => {
                tracing::warn!(error = %e, ?pause, "cannot open a new ZooKeeper session; retrying");
            }
        }
        drop(current);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_RECONNECT_PAUSE);
    }
}

/// The error for a poisoned client lock (a thread panicked holding it).
fn poisoned() -> nodepool_core::Error {
    crate::error::backend_error(
        nodepool_core::error::ErrorKind::Permanent,
        "ZooKeeper client lock poisoned".into(),
    )
}
