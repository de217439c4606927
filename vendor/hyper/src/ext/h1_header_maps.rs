//! cutover: the spare header maps of HTTP/1 connections, open to the
//! embedder.
//!
//! hyper parses each HTTP/1 head into a header map taken from a small
//! per-thread list of emptied maps, and an idle connection's map goes back
//! to it. An embedder that parses heads of its own, or is done with a
//! request's map (a proxy, once the request it forwarded is answered), can
//! take from and give to the same list, so one bounded set of maps per
//! thread serves both instead of two.

use http::HeaderMap;

/// Give `map` back to this thread's spares: emptied, kept if it has room
/// (and is not larger than hyper keeps), freed otherwise.
pub fn give_header_map(map: HeaderMap) {
    crate::proto::h1::give_headers(map)
}

/// An empty map with room for `fields`: this thread's spare if it has
/// one, else a new one.
pub fn take_header_map(fields: usize) -> HeaderMap {
    match crate::proto::h1::take_headers() {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}
