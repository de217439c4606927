//! What the floor examples share: the command line, a current-thread
//! runtime, and a task per accepted connection.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

/// Parse `LISTEN_ADDR UPSTREAM_ADDR` from the command line, then serve every
/// connection accepted on the first with `proxy_connection` until killed.
pub fn serve<F, Fut, E>(name: &'static str, proxy_connection: F) -> Result<(), Box<dyn std::error::Error>>
where
    F: Fn(TcpStream, SocketAddr) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream), None) = (args.next(), args.next(), args.next()) else {
        return Err(format!("usage: {name} LISTEN_ADDR UPSTREAM_ADDR").into());
    };
    let listen: SocketAddr = listen.parse()?;
    let upstream: SocketAddr = upstream.parse()?;

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (downstream, _) = listener.accept().await?;
            tokio::spawn(async move {
                if let Err(error) = proxy_connection(downstream, upstream).await {
                    eprintln!("{name}: connection ended: {error}");
                }
            });
        }
    })
}
