//! An HTTP/1.1 relay on loopback in front of etcd's JSON gateway that a
//! test can hold for one kind of request: while held, a request whose body
//! contains a chosen byte string waits, unanswered, until released, and
//! every other request goes through. A test puts it between one replica
//! and etcd to keep that replica's write of one key in flight for as long
//! as it likes, while the rest of what the replica says to etcd (leases,
//! the election, watches, its evidence) flows as usual. [`super::relay`]
//! holds whole connections; this holds one call.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A relay to one HTTP/1.1 target.
pub struct Gate {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The byte string a held request's body contains; `None`: hold none.
    hold: watch::Sender<Option<Vec<u8>>>,
    /// Requests waiting at the gate now.
    waiting: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Gate {
    /// Relay `127.0.0.1:<some port>` to `target`, holding nothing.
    pub async fn start(target: SocketAddr) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let hold = watch::Sender::new(None::<Vec<u8>>);
        let waiting = Arc::new(AtomicUsize::new(0));
        let (rules, count) = (hold.subscribe(), waiting.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (rules, count) = (rules.clone(), count.clone());
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |request| pass(request, target, rules.clone(), count.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(client), service)
                        .await;
                });
            }
        });
        Gate { addr, hold, waiting, task }
    }

    /// From now on, hold every request whose body contains `needle`.
    pub fn hold_bodies_with(&self, needle: &[u8]) {
        self.hold.send_replace(Some(needle.to_vec()));
    }

    /// Let the held requests go on, and hold nothing more.
    pub fn release(&self) {
        self.hold.send_replace(None);
    }

    /// How many requests wait at the gate now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forward one request (after the gate, if it is held), and stream the
/// answer back: a watch's answer does not end.
async fn pass(
    request: Request<Incoming>,
    target: SocketAddr,
    mut rules: watch::Receiver<Option<Vec<u8>>>,
    waiting: Arc<AtomicUsize>,
) -> Result<Response<Incoming>, BoxError> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let held = |rule: &Option<Vec<u8>>| {
        rule.as_deref().is_some_and(|needle| body.windows(needle.len().max(1)).any(|w| w == needle))
    };
    if held(&rules.borrow_and_update()) {
        waiting.fetch_add(1, Ordering::SeqCst);
        let released = rules.wait_for(|rule| !held(rule)).await.map(|_| ());
        waiting.fetch_sub(1, Ordering::SeqCst);
        released?;
    }
    let stream = TcpStream::connect(target).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let answer = sender.send_request(Request::from_parts(parts, Full::new(body))).await?;
    Ok(answer)
}
