//! Giving memory back to the system after a burst of traffic.
//!
//! A burst leaves glibc's malloc holding what its connections freed:
//! buffers, header maps, tasks. It keeps that memory for the next burst,
//! scattered between blocks still in use, so the heap cannot shrink and the
//! pages stay resident: after a short load test the proxy holds several
//! times what it started with, for good. Every [`CHECK_EVERY`]
//! [`release_after_bursts`] compares the anonymous memory resident with what
//! the heap has in use, and when at least [`RELEASE_AT`] more is resident it
//! asks malloc to give its free pages back (`malloc_trim`, which HAProxy also
//! calls when it releases its pools). Steady traffic reuses its free memory
//! and seldom leaves that much, so a busy proxy is not trimmed over and over.
//!
//! Only with glibc; elsewhere this does nothing.

use std::time::Duration;

use tokio::sync::watch;

/// Free memory still resident, past which it is given back.
pub const RELEASE_AT: usize = 8 << 20;

/// How often the proxy looks.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);

/// Anonymous memory resident before and after a release, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// Before.
    pub before: usize,
    /// After.
    pub after: usize,
}

/// If the process holds at least `at_least` bytes of free memory resident,
/// give it back; says how much anonymous memory was resident before and
/// after. `None` when there was less, or where this cannot be done.
pub fn release_free_memory(at_least: usize) -> Option<Released> {
    let before = resident_anonymous()?;
    let in_use = glibc::heap_in_use()?;
    // Stacks and the runtime's own mappings are resident and not in the
    // heap: a few hundred KiB, well under `at_least`.
    if before.saturating_sub(in_use) < at_least {
        return None;
    }
    glibc::trim();
    let after = resident_anonymous()?;
    Some(Released { before, after })
}

/// Every [`CHECK_EVERY`], give free memory back when [`RELEASE_AT`] or more
/// of it is resident; until the proxy starts closing.
pub async fn release_after_bursts(mut closing: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(CHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate, and right after start there is nothing to give back.
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = crate::lifecycle::stopped(&mut closing) => return,
        }
        // On the runtime's own thread, not a blocking one: the time a
        // trim takes is spent in madvise with each arena's lock held, so
        // a worker allocating from that arena would wait for it anyway, and
        // a new thread would bring an arena of its own.
        let started = std::time::Instant::now();
        if let Some(released) = release_free_memory(RELEASE_AT) {
            tracing::debug!(
                before_kib = released.before >> 10,
                after_kib = released.after >> 10,
                took = ?started.elapsed(),
                "gave free memory back to the system"
            );
        }
    }
}

/// Anonymous memory resident (`RssAnon` in `/proc/self/status`), in bytes.
fn resident_anonymous() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|line| line.strip_prefix("RssAnon:"))?;
    let kib: usize = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib << 10)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod glibc {
    /// Bytes the heap has handed out and not had back (arenas and
    /// mmapped blocks).
    pub(super) fn heap_in_use() -> Option<usize> {
        // SAFETY: mallinfo2 takes no arguments and returns malloc's own
        // statistics by value.
        let info = unsafe { libc::mallinfo2() };
        Some(info.uordblks.saturating_add(info.hblkhd))
    }

    /// Give every free page of every arena back to the system.
    pub(super) fn trim() {
        // SAFETY: malloc_trim takes a size (0: keep no padding) and only
        // releases memory malloc holds free.
        unsafe { libc::malloc_trim(0) };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod glibc {
    pub(super) fn heap_in_use() -> Option<usize> {
        None
    }

    pub(super) fn trim() {}
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn free_memory_a_burst_left_behind_goes_back() {
        // A burst: 32 MiB in 64 KiB blocks (below malloc's mmap threshold,
        // so on the heap), written to so they are resident. Every other
        // block is then freed: the free half lies between blocks in use,
        // so malloc cannot shrink the heap by itself.
        let mut blocks: Vec<Vec<u8>> = (0..512).map(|_| vec![1u8; 64 << 10]).collect();
        let kept: Vec<Vec<u8>> = blocks.iter_mut().step_by(2).map(std::mem::take).collect();
        drop(blocks);
        let released = release_free_memory(RELEASE_AT).expect("16 MiB free and resident");
        // Tests running alongside allocate too: ask for half of it.
        assert!(
            released.before.saturating_sub(released.after) >= 8 << 20,
            "gave back only {} KiB",
            released.before.saturating_sub(released.after) >> 10
        );
        assert_eq!(kept.iter().map(Vec::len).sum::<usize>(), 256 * (64 << 10), "the blocks in use stay");
        // Nothing left to give: no second trim.
        assert_eq!(release_free_memory(RELEASE_AT), None);
    }
}
