//! [`GetToken`]: the future of [`Client::get_token_async`](crate::Client::get_token_async),
//! runtime-agnostic (no runtime, no timer, no thread of its own).
//!
//! The first poll does what the blocking call does on a hit: one lookup under the lock, the
//! token copied out, no I/O. A miss, or a fetch of the same key already under way, goes on in
//! the client's worker pool through [`get_token_or_notify`](crate::Client::get_token_or_notify)'s
//! path; its callback puts the result in a slot shared with the future and wakes the waker the
//! future left there. Dropping the future does not stop the fetch: the token still fills the
//! cache for the next caller.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use imds_cache::Key;
use parking_lot::Mutex;
use zeroize::Zeroize;

use crate::pool::{Callback, Reply};
use crate::shared::Shared;
use crate::{Error, Token};

thread_local! {
    /// Where a hit is copied before it becomes a [`Token`] of its exact length: one
    /// allocation per hit, not one of `max_token_bytes`. Wiped after each copy (D13).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The future of [`Client::get_token_async`](crate::Client::get_token_async): resolves to the
/// token of one (identity, resource) or the error the blocking call would give.
///
/// It may be polled from any executor and moved between threads. Dropping it before it
/// resolves leaves the fetch it started running, so the cache is filled all the same.
/// Polling it again after it resolved panics, as an `async fn`'s future does.
#[must_use = "a future does nothing until it is polled"]
pub struct GetToken<'a> {
    state: State<'a>,
}

enum State<'a> {
    /// Not polled yet.
    Start {
        shared: &'a Arc<Shared>,
        key: Key<'a>,
    },
    /// The call goes on in the worker pool; the result arrives in the slot.
    Waiting(Arc<Slot>),
    /// Resolved.
    Done,
}

/// What the worker pool's callback and the future share.
#[derive(Default)]
struct Slot {
    inner: Mutex<SlotState>,
}

#[derive(Default)]
enum SlotState {
    /// No result yet; the waker of the last poll, if any.
    #[default]
    Empty,
    Waiting(Waker),
    Ready(Result<Token, Error>),
}

impl Slot {
    /// Stores the result and wakes the future's last waker. The lock is released before the
    /// wake: a waker may poll inline.
    fn complete(&self, result: Result<Token, Error>) {
        let previous = std::mem::replace(&mut *self.inner.lock(), SlotState::Ready(result));
        if let SlotState::Waiting(waker) = previous {
            waker.wake();
        }
    }

    /// The result if it is there; else `waker` is stored (replacing an older one that would
    /// not wake the same task) and `Pending` returned. The check and the store are under one
    /// lock, so a completion between them cannot be missed.
    fn poll(&self, waker: &Waker) -> Poll<Result<Token, Error>> {
        let mut inner = self.inner.lock();
        match std::mem::take(&mut *inner) {
            SlotState::Ready(result) => Poll::Ready(result),
            SlotState::Waiting(old) if old.will_wake(waker) => {
                *inner = SlotState::Waiting(old);
                Poll::Pending
            }
            SlotState::Empty | SlotState::Waiting(_) => {
                *inner = SlotState::Waiting(waker.clone());
                Poll::Pending
            }
        }
    }
}

/// The pool's callback for one future. If the pool drops it uncalled (a forked child empties
/// the parent's queue, D12), the future is told instead of waiting forever.
struct Notifier(Option<Arc<Slot>>);

impl Notifier {
    fn callback(slot: Arc<Slot>) -> Callback {
        let mut notifier = Notifier(Some(slot));
        Box::new(move |result| {
            if let Some(slot) = notifier.0.take() {
                slot.complete(result.map(|(token, expires_on_s)| {
                    Token::new(token.into_boxed_slice(), expires_on_s)
                }));
            }
        })
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            slot.complete(Err(Error::Unavailable(
                "the call was dropped by the client before it finished",
            )));
        }
    }
}

impl<'a> GetToken<'a> {
    pub(crate) fn new(shared: &'a Arc<Shared>, key: Key<'a>) -> Self {
        Self {
            state: State::Start { shared, key },
        }
    }
}

/// The first poll: a hit is copied out and returned; anything else is handed to the pool.
/// `f` of the token and its expiry (epoch seconds), if the lock-free read finds a token: the
/// common case, answered with no slot, no callback and no deadline made for it. The bytes are
/// in this thread's scratch buffer, wiped when `f` returns.
pub(crate) fn peek_with<T>(
    shared: &Shared,
    key: &Key<'_>,
    f: impl FnOnce(&[u8], u64) -> T,
) -> Option<T> {
    SCRATCH.with(|scratch| {
        let mut buf = scratch.borrow_mut();
        if buf.len() < shared.config.cache.max_token_bytes {
            buf.resize(shared.config.cache.max_token_bytes, 0);
        }
        let (len, expires_on_s) = shared.peek(key, shared.now_ms(), &mut buf)?;
        let answer = f(&buf[..len], expires_on_s);
        buf[..len].zeroize();
        Some(answer)
    })
}

fn start(shared: &Arc<Shared>, key: &Key<'_>, slot: &Arc<Slot>) -> Poll<Result<Token, Error>> {
    let deadline = Instant::now() + shared.config.deadline;
    let reply = Reply::Notify(Notifier::callback(slot.clone()));
    SCRATCH.with(|scratch| {
        let mut buf = scratch.borrow_mut();
        if buf.len() < shared.config.cache.max_token_bytes {
            buf.resize(shared.config.cache.max_token_bytes, 0);
        }
        match shared.start(key, &mut buf, deadline, reply) {
            Ok(Some((len, expires_on_s))) => {
                let token = Token::new(Box::from(&buf[..len]), expires_on_s);
                buf[..len].zeroize();
                Poll::Ready(Ok(token))
            }
            Ok(None) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    })
}

impl Future for GetToken<'_> {
    type Output = Result<Token, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let answer = match &this.state {
            State::Start { shared, key } => {
                let token = peek_with(shared, key, |bytes, expires_on_s| {
                    Token::new(Box::from(bytes), expires_on_s)
                });
                if let Some(token) = token {
                    this.state = State::Done;
                    return Poll::Ready(Ok(token));
                }
                let slot = Arc::new(Slot::default());
                match start(shared, key, &slot) {
                    // The callback may have run already: the slot says.
                    Poll::Pending => {
                        let answer = slot.poll(cx.waker());
                        this.state = State::Waiting(slot);
                        answer
                    }
                    ready => ready,
                }
            }
            State::Waiting(slot) => slot.poll(cx.waker()),
            State::Done => panic!("GetToken polled after it resolved"),
        };
        if answer.is_ready() {
            this.state = State::Done;
        }
        answer
    }
}

/// Shows the state, never a token.
impl std::fmt::Debug for GetToken<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Start { .. } => "start",
            State::Waiting(_) => "waiting",
            State::Done => "done",
        };
        f.debug_struct("GetToken").field("state", &state).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Counting>, Waker) {
        let count = Arc::new(Counting::default());
        (count.clone(), Waker::from(count))
    }

    fn token() -> Result<Token, Error> {
        Ok(Token::new(Box::from(&b"t"[..]), 1_900_000_000))
    }

    #[test]
    fn a_repoll_with_another_waker_replaces_it() {
        let slot = Slot::default();
        let (a, waker_a) = counting();
        let (b, waker_b) = counting();
        assert!(slot.poll(&waker_a).is_pending());
        assert!(slot.poll(&waker_b).is_pending());
        slot.complete(token());
        assert_eq!(
            a.0.load(Ordering::SeqCst),
            0,
            "the replaced waker is not woken"
        );
        assert_eq!(b.0.load(Ordering::SeqCst), 1);
        assert!(matches!(slot.poll(&waker_b), Poll::Ready(Ok(_))));
    }

    #[test]
    fn a_repoll_with_the_same_waker_keeps_it() {
        let slot = Slot::default();
        let (a, waker_a) = counting();
        assert!(slot.poll(&waker_a).is_pending());
        // `will_wake` holds: the stored clone is kept, the new one never taken (strong count
        // stays: the test's Arc, `waker_a`, the stored clone).
        assert!(slot.poll(&waker_a).is_pending());
        assert_eq!(Arc::strong_count(&a), 3);
        slot.complete(token());
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_completion_before_the_first_poll_is_not_missed() {
        let slot = Slot::default();
        slot.complete(token());
        let (a, waker_a) = counting();
        assert!(matches!(slot.poll(&waker_a), Poll::Ready(Ok(_))));
        assert_eq!(a.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_callback_dropped_uncalled_fails_the_future() {
        let slot = Arc::new(Slot::default());
        let (a, waker_a) = counting();
        assert!(slot.poll(&waker_a).is_pending());
        drop(Notifier::callback(slot.clone()));
        assert_eq!(a.0.load(Ordering::SeqCst), 1);
        match slot.poll(&waker_a) {
            Poll::Ready(Err(e)) => assert_eq!(e.code(), "unavailable"),
            _ => panic!("the future must be told"),
        }
    }

    #[test]
    fn a_called_callback_delivers_once() {
        let slot = Arc::new(Slot::default());
        let (a, waker_a) = counting();
        assert!(slot.poll(&waker_a).is_pending());
        Notifier::callback(slot.clone())(Ok((b"tok".to_vec(), 1_900_000_000)));
        assert_eq!(
            a.0.load(Ordering::SeqCst),
            1,
            "woken once, not again by the drop"
        );
        match slot.poll(&waker_a) {
            Poll::Ready(Ok(t)) => {
                assert_eq!((t.secret(), t.expires_on_s()), (&b"tok"[..], 1_900_000_000))
            }
            _ => panic!("the token must arrive"),
        }
    }
}
