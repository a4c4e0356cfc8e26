//! Request metrics by server, and in-flight counts by deployment (a draining
//! deployment is stopped only once its count reaches zero).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use tokio::sync::Notify;
use uuid::Uuid;

/// Prometheus collectors of the gateway; register them once with the API's registry.
#[derive(Clone)]
pub struct GatewayMetrics {
    /// `bmm_gateway_requests_total{server, status}`.
    pub requests: IntCounterVec,
    /// `bmm_gateway_request_duration_seconds{server}`: time to the response head.
    pub duration: HistogramVec,
    /// `bmm_gateway_in_flight_requests{server}`.
    pub in_flight: IntGaugeVec,
}

impl GatewayMetrics {
    pub fn new() -> GatewayMetrics {
        let requests = IntCounterVec::new(
            Opts::new("bmm_gateway_requests_total", "MCP requests through the gateway, by server slug and status"),
            &["server", "status"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "bmm_gateway_request_duration_seconds",
                "Time from request to response head through the gateway, by server slug",
            )
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["server"],
        )
        .expect("valid metric");
        let in_flight = IntGaugeVec::new(
            Opts::new("bmm_gateway_in_flight_requests", "Requests (and open streams) being proxied, by server slug"),
            &["server"],
        )
        .expect("valid metric");
        GatewayMetrics { requests, duration, in_flight }
    }

    /// Register every collector with `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.requests.clone()))?;
        registry.register(Box::new(self.duration.clone()))?;
        registry.register(Box::new(self.in_flight.clone()))?;
        Ok(())
    }
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        GatewayMetrics::new()
    }
}

#[derive(Default)]
struct Counter {
    n: AtomicUsize,
    idle: Notify,
}

/// In-flight requests per deployment in this process.
#[derive(Clone, Default)]
pub struct InFlight {
    map: Arc<Mutex<HashMap<Uuid, Arc<Counter>>>>,
}

impl InFlight {
    /// Requests to `deployment_id` not finished yet (streams count until they close).
    pub fn count(&self, deployment_id: Uuid) -> usize {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&deployment_id).map_or(0, |c| c.n.load(Ordering::SeqCst))
    }

    /// Wait until no request to `deployment_id` is in flight; false on timeout.
    pub async fn wait_drained(&self, deployment_id: Uuid, timeout: Duration) -> bool {
        let counter = {
            let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&deployment_id) {
                Some(c) => c.clone(),
                None => return true,
            }
        };
        let wait = async {
            loop {
                let idle = counter.idle.notified();
                tokio::pin!(idle);
                // Register before checking, so a wake-up between the two is not lost.
                idle.as_mut().enable();
                if counter.n.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    pub(crate) fn start(&self, deployment_id: Uuid) -> InFlightGuard {
        let counter = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(deployment_id).or_default().clone()
        };
        counter.n.fetch_add(1, Ordering::SeqCst);
        InFlightGuard { inflight: self.clone(), deployment_id, counter }
    }
}

/// Counts one request until dropped (with the response body, for streams).
pub(crate) struct InFlightGuard {
    inflight: InFlight,
    deployment_id: Uuid,
    counter: Arc<Counter>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.counter.n.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.counter.idle.notify_waiters();
            // Forget idle deployments so the map does not grow forever.
            let mut map = self.inflight.map.lock().unwrap_or_else(|p| p.into_inner());
            if self.counter.n.load(Ordering::SeqCst) == 0 {
                map.remove(&self.deployment_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_flight_counts_and_drains() {
        let f = InFlight::default();
        let d = Uuid::new_v4();
        assert_eq!(f.count(d), 0);
        assert!(f.wait_drained(d, Duration::from_millis(10)).await);
        let a = f.start(d);
        let b = f.start(d);
        assert_eq!(f.count(d), 2);
        assert!(!f.wait_drained(d, Duration::from_millis(20)).await);
        drop(a);
        let waiter = tokio::spawn({
            let f = f.clone();
            async move { f.wait_drained(d, Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(b);
        assert!(waiter.await.unwrap());
        assert_eq!(f.count(d), 0);
    }

    #[test]
    fn metrics_register_once() {
        let r = Registry::new();
        let m = GatewayMetrics::new();
        m.register(&r).unwrap();
        m.requests.with_label_values(&["s", "200"]).inc();
        assert!(r.gather().iter().any(|f| f.name() == "bmm_gateway_requests_total"));
        assert!(m.register(&r).is_err(), "double registration is refused");
    }
}
