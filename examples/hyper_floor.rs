//! The cheapest HTTP/1.1 proxy this stack can make: a reference point for the
//! benchmarks, not a product.
//!
//! It has no routing, no splitting, no metrics, no timeouts and no header
//! rewriting. It runs on a current-thread runtime, and each downstream
//! connection gets one dedicated upstream connection, so there is no pool to
//! search and no lock. That is the shape the performance issue measured as
//! "a minimal proxy on the same stack". The upstream connection runs in a
//! task of its own, as hyper intends: driving both connections inside one
//! task (`tokio::join!`) measured 4 % more instructions per request, because
//! the joined task polls both state machines on every wake-up.
//! `benches/load/instructions.sh` runs it
//! beside nginx, HAProxy and cutover: the distance from this floor to cutover
//! is what cutover's own features cost, and the distance from nginx to this
//! floor is what hyper and tokio cost before cutover does anything.
//!
//! Usage: `cargo run --release --example hyper_floor -- LISTEN_ADDR UPSTREAM_ADDR`

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[path = "shared/floor.rs"]
mod floor;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    floor::serve("hyper_floor", proxy_connection)
}

async fn proxy_connection(downstream: TcpStream, upstream: SocketAddr) -> Result<(), hyper::Error> {
    let Ok(upstream) = TcpStream::connect(upstream).await else {
        return Ok(()); // the client sees the connection close
    };
    // Both sockets carry small messages back and forth: Nagle would only add delay.
    let _ = downstream.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (sender, upstream_connection) = hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await?;
    // hyper serves one HTTP/1 request at a time, so the lock is never contended;
    // it is only there because the service is `Fn` and sending needs `&mut`.
    let sender: Arc<Mutex<SendRequest<Incoming>>> = Arc::new(Mutex::new(sender));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        // Nothing can panic while the lock is held, so a poisoned lock is still usable.
        let response = sender.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).send_request(request);
        async move {
            let response: Result<Response<Incoming>, hyper::Error> = response.await;
            response
        }
    });
    let downstream_connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(downstream), service);
    // The upstream connection ends once the service (and with it the sender) is
    // dropped, which happens when the downstream connection ends.
    tokio::spawn(upstream_connection);
    downstream_connection.await
}
