//! A time limit that costs nothing when it is not needed.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

/// `future`'s output if it completes within `limit`; `None` if the limit passed first.
///
/// Like `tokio::time::timeout`, except that the clock is read and the timer set up only if
/// `future` is not ready when first polled. A request head that has arrived, or an answer that
/// fits the socket's send buffer (the usual case for both), then costs no clock reading (some
/// 40 ns each on the machine of bench/RESULTS.md; two of the five a handshake made). The limit
/// counts from that first poll; `future` is polled once per wake-up, as under `timeout`.
///
/// `future` is pinned by the caller (`within(limit, pin!(f))`): taken by value, it would be
/// stored twice in this function's state, as received and where it is pinned.
pub(crate) async fn within<F: Future>(
    limit: Duration,
    mut future: Pin<&mut F>,
) -> Option<F::Output> {
    // Not kept in a variable: one that lived across the wait below would take room for the
    // output in this future's state.
    if let Poll::Ready(output) = poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await {
        return Some(output);
    }
    // Pending, with the task's waker registered: the timer joins it, and `future` is polled
    // again only when woken.
    let mut timer = pin!(tokio::time::sleep(limit));
    let mut woken = false;
    poll_fn(|cx| {
        if woken {
            if let Poll::Ready(output) = future.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
        }
        woken = true;
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_ready_future_is_not_timed() {
        // Ready at once: its output, whatever the limit (zero here).
        assert_eq!(within(Duration::ZERO, pin!(async { 7 })).await, Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_future_that_completes_in_time_gives_its_output() {
        let (mut ours, mut theirs) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            let mut byte = [0u8; 1];
            within(Duration::from_secs(5), pin!(theirs.read_exact(&mut byte)))
                .await
                .map(|read| (read.unwrap(), byte[0]))
        });
        tokio::time::sleep(Duration::from_secs(4)).await;
        ours.write_all(b"x").await.unwrap();
        assert_eq!(reader.await.unwrap(), Some((1, b'x')));
    }

    #[tokio::test(start_paused = true)]
    async fn a_future_that_stays_pending_is_cut_off_at_the_limit() {
        let started = tokio::time::Instant::now();
        let never = std::future::pending::<()>();
        assert_eq!(within(Duration::from_secs(3), pin!(never)).await, None);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_future_is_polled_once_per_wake_up() {
        // Counts its polls; ready on the third. Each pending poll has it woken 10 ms later, as
        // a transport would wake it: ready after two wake-ups, 20 ms. A poll right after the
        // first (to set the timer up) would make it ready after one, at 10 ms.
        let started = tokio::time::Instant::now();
        let mut polls = 0;
        let counted = poll_fn(|cx| {
            polls += 1;
            if polls == 3 {
                return Poll::Ready(polls);
            }
            let waker = cx.waker().clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                waker.wake();
            });
            Poll::Pending
        });
        assert_eq!(within(Duration::from_secs(1), pin!(counted)).await, Some(3));
        assert_eq!(started.elapsed(), Duration::from_millis(20));
    }
}
