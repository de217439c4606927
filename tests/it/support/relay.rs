//! A TCP relay on loopback that a test can hold: while held, the bytes it
//! reads either way wait, undelivered, until it is released — a network
//! that stalls for a moment without breaking a connection. A test puts it
//! between one replica and etcd to make that replica's write arrive after
//! another replica's change, in a fixed order.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A relay to one target, forwarding every connection it accepts.
pub struct Relay {
    /// Where clients connect.
    pub addr: SocketAddr,
    held: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Relay `127.0.0.1:<some port>` to `target`, not held.
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let held = watch::Sender::new(false);
        let gate = held.subscribe();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let gate = gate.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else { return };
                    let (from_client, to_client) = client.into_split();
                    let (from_server, to_server) = server.into_split();
                    tokio::join!(pipe(from_client, to_server, gate.clone()), pipe(from_server, to_client, gate));
                });
            }
        });
        Relay { addr, held, task }
    }

    /// Hold every byte from now on.
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Deliver what was held, and everything after.
    pub fn release(&self) {
        self.held.send_replace(false);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut gate: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if gate.wait_for(|held| !*held).await.is_err() {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
