use slab::Slab;

/// Buffers frames for multiple streams.
#[derive(Debug)]
pub struct Buffer<T> {
    slab: Slab<Slot<T>>,
}

/// A sequence of frames in a `Buffer`
#[derive(Debug)]
pub struct Deque {
    indices: Option<Indices>,
}

/// Tracks the head & tail for a sequence of frames in a `Buffer`.
#[derive(Debug, Default, Copy, Clone)]
struct Indices {
    head: usize,
    tail: usize,
}

#[derive(Debug)]
struct Slot<T> {
    value: T,
    next: Option<usize>,
}

/// cutover: give a slab that has no room yet as many entries as fit in a
/// block glibc's per-thread cache serves (requests up to 1,032 bytes), at
/// most the 4 its first insert would make. The streams' and frames' slabs
/// of a connection with no stream open are dropped (`release_idle`), so a
/// client that sends one request at a time makes them again for every
/// stream; 4 entries of a stream or a queued frame are over 1,200 bytes, and
/// a block that size costs a search of malloc's bins to allocate and a
/// merge with its neighbours to free.
pub(super) fn reserve_first<T>(slab: &mut Slab<T>) {
    if slab.capacity() == 0 {
        // An entry is the value, or a vacant slot's next index beside it.
        let entry = std::mem::size_of::<T>() + std::mem::size_of::<usize>();
        slab.reserve_exact((1024 / entry).clamp(1, 4));
    }
}

impl<T> Buffer<T> {
    pub fn new() -> Self {
        Buffer { slab: Slab::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// cutover: drop the storage of an empty buffer (no frame queued, so no
    /// `Deque` points into it).
    pub fn release_idle(&mut self) {
        if self.slab.is_empty() {
            self.slab = Slab::new();
        }
    }
}

impl Deque {
    pub fn new() -> Self {
        Deque { indices: None }
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_none()
    }

    pub fn push_back<T>(&mut self, buf: &mut Buffer<T>, value: T) {
        reserve_first(&mut buf.slab);
        let key = buf.slab.insert(Slot { value, next: None });

        match self.indices {
            Some(ref mut idxs) => {
                buf.slab[idxs.tail].next = Some(key);
                idxs.tail = key;
            }
            None => {
                self.indices = Some(Indices {
                    head: key,
                    tail: key,
                });
            }
        }
    }

    pub fn push_front<T>(&mut self, buf: &mut Buffer<T>, value: T) {
        reserve_first(&mut buf.slab);
        let key = buf.slab.insert(Slot { value, next: None });

        match self.indices {
            Some(ref mut idxs) => {
                buf.slab[key].next = Some(idxs.head);
                idxs.head = key;
            }
            None => {
                self.indices = Some(Indices {
                    head: key,
                    tail: key,
                });
            }
        }
    }

    pub fn pop_front<T>(&mut self, buf: &mut Buffer<T>) -> Option<T> {
        match self.indices {
            Some(mut idxs) => {
                let mut slot = buf.slab.remove(idxs.head);

                if idxs.head == idxs.tail {
                    assert!(slot.next.is_none());
                    self.indices = None;
                } else {
                    idxs.head = slot.next.take().unwrap();
                    self.indices = Some(idxs);
                }

                Some(slot.value)
            }
            None => None,
        }
    }
}
