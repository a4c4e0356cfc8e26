//! Live build events: ONE `LISTEN` connection per API process, fanned out in
//! memory to every subscriber.
//!
//! - The listener (tokio-postgres) reconnects with backoff; once `LISTEN` is
//!   back it wakes every feed, which re-reads the log from its last `seq`, so
//!   notifications lost while it was down lose no events.
//! - Each build with subscribers has one *feed*: a task that reads new events
//!   from the database once per notification and broadcasts them on a bounded
//!   `tokio::sync::broadcast` channel. It stops when its last subscriber goes.
//! - A subscriber first subscribes to the feed, then reads the backlog from the
//!   database, then follows the feed, dropping events it has already sent
//!   (by `seq`). A gap, a lag (slow subscriber, the ring buffer overwrote it)
//!   or a quiet spell makes it re-read from the database after its last
//!   `seq`. A slow subscriber therefore never stalls the others and never
//!   makes memory grow: it only falls back to the database.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bmm_db::Pool;
use bmm_db::events::EventKind;
use bmm_db::models::{BuildEvent, BuildStatus};
use bmm_db::schema::{build_events, builds};
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl};
use futures::StreamExt;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// Events per feed ring buffer; a subscriber further behind re-reads from the database.
const FEED_CAPACITY: usize = 256;
/// Events per database read.
const PAGE: i64 = 500;
/// A feed re-reads the log this often even without a notification (belt and braces).
const FEED_POLL: Duration = Duration::from_secs(5);
/// A subscriber with nothing new for this long re-reads the log and checks whether the build ended.
const SUBSCRIBER_IDLE: Duration = Duration::from_secs(15);
/// Events buffered between a subscriber task and its GraphQL stream.
const SUBSCRIBER_BUFFER: usize = 64;
/// NOTIFY channel the gateway announces route changes on.
pub const ROUTES_CHANNEL: &str = "bmm_routes";

struct Feed {
    tx: broadcast::Sender<Arc<BuildEvent>>,
    wake: Arc<Notify>,
}

struct HubInner {
    pool: Pool,
    database_url: String,
    feeds: Mutex<HashMap<Uuid, Feed>>,
    listening: AtomicBool,
    subscribers: AtomicI64,
    notifications: AtomicU64,
    reconnects: AtomicU64,
    /// Bumped on every notification: wakes `serverStatus` subscribers.
    changes: watch::Sender<u64>,
}

/// The fan-out. Cheap to clone.
#[derive(Clone)]
pub struct EventHub {
    inner: Arc<HubInner>,
}

/// Counters for `/metrics` and `/readyz`.
#[derive(Debug, Clone, Copy)]
pub struct HubStats {
    pub listening: bool,
    pub subscribers: i64,
    pub feeds: usize,
    pub notifications: u64,
    pub reconnects: u64,
}

impl EventHub {
    /// Start the hub and its listener task (which lives as long as the hub).
    pub fn start(pool: Pool, database_url: String) -> EventHub {
        let (changes, _) = watch::channel(0);
        let inner = Arc::new(HubInner {
            pool,
            database_url,
            feeds: Mutex::new(HashMap::new()),
            listening: AtomicBool::new(false),
            subscribers: AtomicI64::new(0),
            notifications: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            changes,
        });
        tokio::spawn(listen_forever(Arc::downgrade(&inner)));
        EventHub { inner }
    }

    pub fn stats(&self) -> HubStats {
        HubStats {
            listening: self.inner.listening.load(Ordering::Relaxed),
            subscribers: self.inner.subscribers.load(Ordering::Relaxed),
            feeds: self.inner.feeds.lock().expect("feeds lock").len(),
            notifications: self.inner.notifications.load(Ordering::Relaxed),
            reconnects: self.inner.reconnects.load(Ordering::Relaxed),
        }
    }

    /// A receiver that changes on every build-event or route notification.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    fn subscribe(&self, org_id: Uuid, build_id: Uuid) -> broadcast::Receiver<Arc<BuildEvent>> {
        let mut feeds = self.inner.feeds.lock().expect("feeds lock");
        if let Some(feed) = feeds.get(&build_id) {
            return feed.tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(FEED_CAPACITY);
        let wake = Arc::new(Notify::new());
        feeds.insert(build_id, Feed { tx: tx.clone(), wake: wake.clone() });
        tokio::spawn(run_feed(self.inner.clone(), org_id, build_id, tx, wake));
        rx
    }

    /// Every event of the build after `after`, in order, then the new ones as
    /// they are appended; ends after a terminal event. The build must belong
    /// to `org_id` (the caller checks it exists).
    pub fn follow(&self, org_id: Uuid, build_id: Uuid, after: i32) -> mpsc::Receiver<ApiResult<BuildEvent>> {
        // Subscribe BEFORE reading the backlog: an event appended in between
        // arrives on the feed and is dropped there if the backlog had it.
        let rx = self.subscribe(org_id, build_id);
        let (tx, out) = mpsc::channel(SUBSCRIBER_BUFFER);
        let hub = self.clone();
        tokio::spawn(async move {
            hub.inner.subscribers.fetch_add(1, Ordering::Relaxed);
            let _gauge = Decrement(&hub.inner.subscribers);
            let mut sub = Subscriber { hub: &hub, org_id, build_id, last: after, tx };
            sub.run(rx).await;
        });
        out
    }
}

struct Decrement<'a>(&'a AtomicI64);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Flow {
    Continue,
    Stop,
}

struct Subscriber<'a> {
    hub: &'a EventHub,
    org_id: Uuid,
    build_id: Uuid,
    last: i32,
    tx: mpsc::Sender<ApiResult<BuildEvent>>,
}

impl Subscriber<'_> {
    async fn run(&mut self, mut rx: broadcast::Receiver<Arc<BuildEvent>>) {
        if let Flow::Stop = self.catch_up().await {
            return;
        }
        loop {
            let next = tokio::select! {
                _ = self.tx.closed() => return,
                r = tokio::time::timeout(SUBSCRIBER_IDLE, rx.recv()) => r,
            };
            let flow = match next {
                Ok(Ok(ev)) if ev.seq <= self.last => Flow::Continue,
                Ok(Ok(ev)) if ev.seq == self.last + 1 => self.send((*ev).clone()).await,
                // A gap (a notification raced the backlog read): fill it from the log.
                Ok(Ok(_)) => self.catch_up().await,
                Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                    tracing::debug!(build_id = %self.build_id, skipped = n, "subscriber lagged; re-reading the log");
                    self.catch_up().await
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    rx = self.hub.subscribe(self.org_id, self.build_id);
                    self.catch_up().await
                }
                Err(_idle) => match self.catch_up().await {
                    Flow::Stop => Flow::Stop,
                    Flow::Continue => self.end_if_build_finished().await,
                },
            };
            if let Flow::Stop = flow {
                return;
            }
        }
    }

    async fn send(&mut self, ev: BuildEvent) -> Flow {
        let terminal = EventKind::parse(&ev.kind).is_some_and(EventKind::is_terminal);
        self.last = ev.seq;
        if self.tx.send(Ok(ev)).await.is_err() || terminal { Flow::Stop } else { Flow::Continue }
    }

    /// Send every stored event after `last`.
    async fn catch_up(&mut self) -> Flow {
        loop {
            let page = match self.read_page().await {
                Ok(p) => p,
                Err(e) => {
                    let _ = self.tx.send(Err(e)).await;
                    return Flow::Stop;
                }
            };
            let full = page.len() as i64 == PAGE;
            for ev in page {
                if ev.seq <= self.last {
                    continue;
                }
                if let Flow::Stop = self.send(ev).await {
                    return Flow::Stop;
                }
            }
            if !full {
                return Flow::Continue;
            }
        }
    }

    /// Read a page, retrying a few times so a database blip does not end the stream.
    async fn read_page(&self) -> ApiResult<Vec<BuildEvent>> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0;
        loop {
            let res: ApiResult<Vec<BuildEvent>> = async {
                let mut conn = self.hub.inner.pool.get().await?;
                Ok(bmm_db::events::list_after(&mut conn, self.org_id, self.build_id, self.last, PAGE).await?)
            }
            .await;
            match res {
                Ok(p) => return Ok(p),
                Err(e) if attempt >= 4 => return Err(e),
                Err(ApiError::Internal(detail)) => {
                    tracing::warn!(build_id = %self.build_id, error = %detail, "reading build events failed; retrying");
                }
                Err(e) => return Err(e),
            }
            attempt += 1;
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }

    /// A build that ended without a terminal event in its log (a crashed
    /// worker, a terminated workflow) must not hold the stream open forever.
    async fn end_if_build_finished(&self) -> Flow {
        use diesel_async::RunQueryDsl;
        let status: Result<Option<String>, ApiError> = async {
            let mut conn = self.hub.inner.pool.get().await?;
            Ok(builds::table
                .filter(builds::id.eq(self.build_id))
                .filter(builds::org_id.eq(self.org_id))
                .select(builds::status)
                .first::<String>(&mut conn)
                .await
                .optional()?)
        }
        .await;
        match status {
            Ok(Some(s)) if BuildStatus::parse(&s).is_some_and(BuildStatus::is_final) => Flow::Stop,
            Ok(None) => Flow::Stop,
            _ => Flow::Continue,
        }
    }
}

async fn max_seq(pool: &Pool, org_id: Uuid, build_id: Uuid) -> ApiResult<i32> {
    use diesel_async::RunQueryDsl;
    let mut conn = pool.get().await?;
    let max: Option<i32> = build_events::table
        .filter(build_events::org_id.eq(org_id))
        .filter(build_events::build_id.eq(build_id))
        .select(diesel::dsl::max(build_events::seq))
        .first(&mut conn)
        .await?;
    Ok(max.unwrap_or(0))
}

/// One build's feed: reads what is new once per wake-up and broadcasts it.
async fn run_feed(
    hub: Arc<HubInner>,
    org_id: Uuid,
    build_id: Uuid,
    tx: broadcast::Sender<Arc<BuildEvent>>,
    wake: Arc<Notify>,
) {
    // Subscribers read what is already stored themselves; the feed starts at the end.
    let mut last = loop {
        match max_seq(&hub.pool, org_id, build_id).await {
            Ok(s) => break s,
            Err(ApiError::Internal(e)) => {
                tracing::warn!(%build_id, error = %e, "feed could not read the log; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(_) => break 0,
        }
        if tx.receiver_count() == 0 && remove_if_idle(&hub, build_id, &tx) {
            return;
        }
    };
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(FEED_POLL) => {}
        }
        if tx.receiver_count() == 0 && remove_if_idle(&hub, build_id, &tx) {
            return;
        }
        loop {
            let page: ApiResult<Vec<BuildEvent>> = async {
                let mut conn = hub.pool.get().await?;
                Ok(bmm_db::events::list_after(&mut conn, org_id, build_id, last, PAGE).await?)
            }
            .await;
            let page = match page {
                Ok(p) => p,
                Err(ApiError::Internal(e)) => {
                    tracing::warn!(%build_id, error = %e, "feed could not read new events");
                    break;
                }
                Err(_) => break,
            };
            let full = page.len() as i64 == PAGE;
            for ev in page {
                last = ev.seq;
                // No receivers is fine: they come and go.
                let _ = tx.send(Arc::new(ev));
            }
            if !full {
                break;
            }
        }
    }
}

/// Remove the feed if it still has no receivers (checked under the lock, so
/// a subscriber that arrives meanwhile keeps it).
fn remove_if_idle(hub: &HubInner, build_id: Uuid, tx: &broadcast::Sender<Arc<BuildEvent>>) -> bool {
    let mut feeds = hub.feeds.lock().expect("feeds lock");
    if tx.receiver_count() == 0 {
        feeds.remove(&build_id);
        true
    } else {
        false
    }
}

fn wake_all(hub: &HubInner) {
    for feed in hub.feeds.lock().expect("feeds lock").values() {
        feed.wake.notify_one();
    }
    hub.changes.send_modify(|n| *n = n.wrapping_add(1));
}

fn on_notification(hub: &HubInner, channel: &str, payload: &str) {
    hub.notifications.fetch_add(1, Ordering::Relaxed);
    if channel == bmm_db::BUILD_EVENTS_CHANNEL {
        let build_id = serde_json::from_str::<serde_json::Value>(payload)
            .ok()
            .and_then(|v| v.get("build_id").and_then(|b| b.as_str()).and_then(|s| s.parse::<Uuid>().ok()));
        match build_id {
            Some(id) => {
                if let Some(feed) = hub.feeds.lock().expect("feeds lock").get(&id) {
                    feed.wake.notify_one();
                }
            }
            None => tracing::warn!(payload, "unreadable build-event notification"),
        }
    }
    hub.changes.send_modify(|n| *n = n.wrapping_add(1));
}

/// Keep one LISTEN connection up for as long as the hub lives.
async fn listen_forever(hub: Weak<HubInner>) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let Some(url) = hub.upgrade().map(|h| h.database_url.clone()) else { return };
        match listen_once(&hub, &url).await {
            Ok(()) => backoff = Duration::from_millis(250),
            Err(e) => tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "build-event listener down"),
        }
        let Some(h) = hub.upgrade() else { return };
        h.listening.store(false, Ordering::Relaxed);
        h.reconnects.fetch_add(1, Ordering::Relaxed);
        drop(h);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn listen_once(hub: &Weak<HubInner>, url: &str) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    // The connection is driven by a task of its own, which also handles the
    // notifications (a map lookup and a wake-up each), so queries below complete.
    let weak = hub.clone();
    let mut driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => match weak.upgrade() {
                    Some(h) => on_notification(&h, n.channel(), n.payload()),
                    None => return Ok(()),
                },
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    let _abort = AbortOnDrop(driver.abort_handle());
    client
        .batch_execute(&format!(
            "LISTEN \"{}\"; LISTEN \"{}\"; LISTEN \"{}\"",
            bmm_db::BUILD_EVENTS_CHANNEL,
            ROUTES_CHANNEL,
            bmm_db::server_events::SERVER_EVENTS_CHANNEL
        ))
        .await?;
    {
        let Some(h) = hub.upgrade() else { return Ok(()) };
        h.listening.store(true, Ordering::Relaxed);
        // Whatever was announced while we were not listening is in the log: re-read it.
        wake_all(&h);
    }
    tracing::info!("listening for build events");
    let mut health = tokio::time::interval(Duration::from_secs(30));
    health.tick().await;
    loop {
        tokio::select! {
            r = &mut driver => return r.unwrap_or(Ok(())),
            _ = health.tick() => {
                if hub.strong_count() == 0 {
                    return Ok(());
                }
                // A dead TCP peer shows up here rather than after the kernel's keepalive.
                match tokio::time::timeout(Duration::from_secs(10), client.simple_query("SELECT 1")).await {
                    Ok(r) => {
                        r?;
                    }
                    Err(_) => {
                        tracing::warn!("build-event listener did not answer a health check in 10 s; reconnecting");
                        return Ok(());
                    }
                }
            }
        }
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
