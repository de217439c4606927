//! The load loop: a few keep-alive clients sending a bounded rate of
//! requests through the proxy, tallying which pool answered, the errors and
//! the latencies, for the display to show per interval and in total.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::params::{CALL_TIMEOUT, POOLS, RATE, WORKERS};
use super::plumbing::lock;

/// Measurements of one pool (or of answers no pool gave).
#[derive(Debug, Default, Clone)]
pub(super) struct Bucket {
    pub(super) requests: u64,
    pub(super) errors: u64,
    latencies_us: Vec<u64>,
}

impl Bucket {
    pub(super) fn p99(&self) -> Option<Duration> {
        p99_us(&mut self.latencies_us.clone()).map(Duration::from_micros)
    }
}

/// The 99th percentile (nearest rank) of `values`, sorting them.
pub(super) fn p99_us(values: &mut [u64]) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (values.len() * 99).div_ceil(100).max(1);
    values.get(rank - 1).copied()
}

/// Index of "answered by no demo pool" (the proxy's own answers, transport errors).
pub(super) const OTHER: usize = POOLS.len();

/// What the load loop measured: since the monitor last looked, and in all.
#[derive(Debug, Default)]
pub(super) struct Tally {
    interval: [Bucket; POOLS.len() + 1],
    total: [(u64, u64); POOLS.len() + 1],
}

impl Tally {
    pub(super) fn record(&mut self, pool: usize, error: bool, latency: Duration) {
        let bucket = &mut self.interval[pool];
        bucket.requests += 1;
        bucket.errors += u64::from(error);
        bucket.latencies_us.push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        self.total[pool].0 += 1;
        self.total[pool].1 += u64::from(error);
    }

    pub(super) fn take_interval(&mut self) -> [Bucket; POOLS.len() + 1] {
        std::mem::take(&mut self.interval)
    }
}

/// Which pool answered, from the body the demo upstreams write.
pub(super) fn pool_of(body: &[u8]) -> usize {
    let word: Vec<u8> = body.iter().copied().take_while(u8::is_ascii_alphabetic).collect();
    POOLS.iter().position(|p| p.as_bytes() == word.as_slice()).unwrap_or(OTHER)
}

/// A fixed-rate load on the proxy.
pub(super) struct Load {
    pub(super) tally: Arc<Mutex<Tally>>,
    stop: watch::Sender<bool>,
    workers: JoinSet<()>,
}

impl Load {
    pub(super) fn start(proxy: SocketAddr) -> Load {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (stop, stopped) = watch::channel(false);
        let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut workers = JoinSet::new();
        let every = Duration::from_secs(1) * WORKERS / RATE;
        for worker in 0..WORKERS {
            let (client, tally, mut stopped) = (client.clone(), tally.clone(), stopped.clone());
            let uri = format!("http://{proxy}/shop/item/{worker}");
            workers.spawn(async move {
                // Stagger the workers across one period.
                let first = Instant::now() + every * worker / WORKERS;
                let mut tick = tokio::time::interval_at(first, every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stopped.changed() => return,
                    }
                    let (pool, error, latency) = one_request(&client, &uri).await;
                    lock(&tally).record(pool, error, latency);
                }
            });
        }
        Load { tally, stop, workers }
    }

    /// Stop the workers (and with them the client and its connections);
    /// return the totals.
    pub(super) async fn stop(mut self) -> [(u64, u64); POOLS.len() + 1] {
        let _ = self.stop.send(true);
        let drained = async { while self.workers.join_next().await.is_some() {} };
        if tokio::time::timeout(CALL_TIMEOUT + Duration::from_secs(1), drained).await.is_err() {
            self.workers.abort_all();
            while self.workers.join_next().await.is_some() {}
        }
        let totals = lock(&self.tally).total;
        totals
    }
}

/// One GET through the proxy: (pool index, failed, latency).
pub(super) async fn one_request(client: &Client<HttpConnector, Empty<Bytes>>, uri: &str) -> (usize, bool, Duration) {
    let started = Instant::now();
    let Ok(request) = Request::get(uri).body(Empty::new()) else { return (OTHER, true, started.elapsed()) };
    let exchange = async {
        let response = client.request(request).await.map_err(|_| ())?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|_| ())?.to_bytes();
        Ok::<_, ()>((status, body))
    };
    match tokio::time::timeout(CALL_TIMEOUT, exchange).await {
        Ok(Ok((status, body))) => (pool_of(&body), status.is_server_error(), started.elapsed()),
        _ => (OTHER, true, started.elapsed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_attributed_to_the_pool_that_gave_them() {
        assert_eq!(pool_of(b"blue\n"), 0);
        assert_eq!(pool_of(b"green\n"), 1);
        assert_eq!(pool_of(b"canary: simulated failure\n"), 2);
        assert_eq!(pool_of(b"bad gateway\n"), OTHER);
        assert_eq!(pool_of(b""), OTHER);
    }

    #[test]
    fn p99_is_the_nearest_rank() {
        assert_eq!(p99_us(&mut []), None);
        assert_eq!(p99_us(&mut [5]), Some(5));
        let mut values: Vec<u64> = (1..=200).rev().collect();
        assert_eq!(p99_us(&mut values), Some(198));
        let mut values: Vec<u64> = (1..=100).collect();
        assert_eq!(p99_us(&mut values), Some(99));
    }
}
