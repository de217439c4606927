//! Access logs: one line per finished request or closed tunnel, saying which
//! route, pool, backend and config revision served it.
//!
//! The log exists to answer "which requests did the new version serve, and
//! how did they fail?". It never slows the request path down: a request
//! hands a finished [`Record`] to a bounded queue and goes on; one writer
//! thread formats and writes lines, and when the sink cannot keep up the
//! queue fills and further records are dropped and counted, never queued
//! without bound. Sampling keeps every failed request and a configured share
//! of the successful ones.
//!
//! Request IDs ([`request_id`]) and W3C trace context ([`trace`]) live
//! beside the log: they are what joins a line here to a backend's own logs
//! and traces.

mod line;
mod pending;
mod record;
pub mod request_id;
mod sink;
mod slab;
pub mod trace;

pub use pending::Pending;
pub use record::{Choice, Format, Kind, Record};
pub use sink::{AccessLog, Destination, Options, SinkError};
