//! A future that is polled only when it may have moved.
//!
//! A connection's loop is woken for every read and write of its requests,
//! and each wake-up polls every branch of its `select!`. The shutdown flag
//! and the watchdog's timer rarely move; gating them costs one atomic load
//! per wake-up instead of a lock or a waker registration.

use std::pin::Pin;
use std::task::{Context, Poll};

pin_project_lite::pin_project! {
    /// A future polled only when it may have moved: after its first poll it
    /// is polled again only once `hint` says so, or the task's waker
    /// changed. The connection loop wakes a few times per request, and
    /// polling the shutdown flag's watch each time costs a lock, and
    /// polling its timer registers the waker again; asking the hint costs
    /// one atomic load.
    pub(super) struct Gated<F, H> {
        #[pin]
        inner: F,
        hint: H,
        waker: Option<std::task::Waker>,
    }
}

impl<F: std::future::Future, H: FnMut(&F) -> bool> Gated<F, H> {
    pub(super) fn new(inner: F, hint: H) -> Self {
        Gated { inner, hint, waker: None }
    }

    /// The inner future, to look at.
    pub(super) fn get_ref(&self) -> &F {
        &self.inner
    }

    /// The inner future, to change it: its next poll goes through.
    pub(super) fn rearm(self: Pin<&mut Self>) -> Pin<&mut F> {
        let this = self.project();
        *this.waker = None;
        this.inner
    }
}

impl<F: std::future::Future, H: FnMut(&F) -> bool> std::future::Future for Gated<F, H> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) && !(this.hint)(&this.inner) {
            return Poll::Pending;
        }
        let polled = this.inner.poll(cx);
        if polled.is_pending() {
            *this.waker = Some(cx.waker().clone());
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::Gated;
    use std::future::Future;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::Duration;
    use tokio::time::Instant;

    /// A future that counts its polls and never finishes.
    struct Counted(Arc<AtomicUsize>);

    impl Future for Counted {
        type Output = ();
        fn poll(self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Poll::Pending
        }
    }

    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }

    #[test]
    fn a_gated_future_is_polled_again_only_when_the_hint_says_so_or_the_waker_changed() {
        let polls = Arc::new(AtomicUsize::new(0));
        let moved = Arc::new(AtomicBool::new(false));
        let hint = moved.clone();
        let mut gated = Box::pin(Gated::new(Counted(polls.clone()), move |_: &_| hint.load(Ordering::Relaxed)));
        let waker = Waker::from(Arc::new(Noop));
        let mut cx = Context::from_waker(&waker);
        for _ in 0..3 {
            assert!(gated.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1, "only the first poll reaches the inner future");
        moved.store(true, Ordering::Relaxed);
        assert!(gated.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 2, "the hint lets the next poll through");
        moved.store(false, Ordering::Relaxed);
        let other = Waker::from(Arc::new(Noop));
        assert!(gated.as_mut().poll(&mut Context::from_waker(&other)).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 3, "a new waker must be registered with the inner future");
    }

    #[tokio::test(start_paused = true)]
    async fn a_gated_timer_fires_at_its_deadline_and_again_once_rearmed() {
        let timer = Gated::new(tokio::time::sleep(Duration::from_secs(10)), tokio::time::Sleep::is_elapsed);
        tokio::pin!(timer);
        let start = Instant::now();
        // Polled again and again meanwhile, as the connection loop does.
        let wake_ups = async {
            loop {
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
        };
        tokio::select! {
            _ = &mut timer => {}
            _ = wake_ups => unreachable!(),
        }
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        timer.as_mut().rearm().reset(Instant::now() + Duration::from_secs(5));
        (&mut timer).await;
        assert_eq!(start.elapsed(), Duration::from_secs(15));
    }
}
