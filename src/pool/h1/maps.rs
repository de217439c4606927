//! Emptied header maps, kept per thread for the next response head.
//!
//! A request's header map is done with once its answer has come (nothing
//! resends the request after that), and a response head needs a map of
//! about the same size. Taking one back spares a fresh map's two
//! allocations, and the old map's two frees, on every forwarded request.
//! The maps are emptied when they are kept, so they hold no value (and no
//! buffer a value was sliced from); few and small ones are kept, so the
//! memory they hold is bounded per thread.

use std::cell::RefCell;

use http::HeaderMap;

/// Maps kept per thread.
const KEPT: usize = 16;
/// The most fields a kept map has room for.
const LARGEST: usize = 96;

thread_local! {
    static MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// Keep `map`, emptied, if there is room for it.
pub fn give(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > LARGEST {
        return;
    }
    map.clear();
    let _ = MAPS.try_with(move |kept| {
        let mut kept = kept.borrow_mut();
        if kept.len() < KEPT {
            kept.push(map);
        }
    });
}

/// An empty map with room for `fields`: a kept one if there is one.
pub(super) fn take(fields: usize) -> HeaderMap {
    let kept = MAPS.try_with(|kept| kept.borrow_mut().pop()).ok().flatten();
    match kept {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HeaderValue, HOST};

    #[test]
    fn a_kept_map_comes_back_empty_with_its_room() {
        let mut map = HeaderMap::with_capacity(12);
        map.insert(HOST, HeaderValue::from_static("app.test"));
        map.append("x-many", HeaderValue::from_static("1"));
        map.append("x-many", HeaderValue::from_static("2"));
        let room = map.capacity();
        give(map);
        let again = take(4);
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(again.capacity(), room);
    }

    #[test]
    fn a_kept_map_too_small_grows_and_a_large_one_is_not_kept() {
        give(HeaderMap::with_capacity(2));
        let grown = take(40);
        assert!(grown.capacity() >= 40, "{}", grown.capacity());
        give(HeaderMap::with_capacity(LARGEST + 1));
        let fresh = take(1);
        assert!(fresh.capacity() < LARGEST, "a map over the bound was kept: {}", fresh.capacity());
    }

    #[test]
    fn no_more_than_the_bound_is_kept() {
        for _ in 0..KEPT + 5 {
            give(HeaderMap::with_capacity(8));
        }
        let kept = MAPS.with(|kept| kept.borrow().len());
        assert_eq!(kept, KEPT);
    }
}
