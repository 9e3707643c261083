//! Keepalive and deadlines: when to ping, when the peer is dead, when output has stalled.
//!
//! The core has no clock. The caller passes the time in ([`Connection::set_now`] before input
//! and commands, [`Connection::handle_timeout`] when the deadline passed) and arms one timer for
//! [`Connection::poll_timeout`]. Everything here is decided from those readings alone, so tests
//! run on simulated time.

use std::time::{Duration, Instant};

use super::{Connection, State};
use crate::error::TimeoutError;
use crate::frame::OpCode;

/// What the deadlines are computed from. Every instant is a reading of the caller's clock.
///
/// Readings are kept as nanoseconds after the first one ([`Tick`], 8 bytes) rather than as
/// `Option<Instant>` (16 bytes each): the struct sits in every connection. The clock never goes
/// back (see [`Connection::set_now`]), so no reading is before the first, and nanoseconds are
/// exact: `start + (t - start)` is `t` again.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Timers {
    /// The first time the caller gave; `None` until then, and no timer runs before it.
    start: Option<Instant>,
    /// The latest time the caller gave (none until `start` is set).
    now: Tick,
    /// When bytes last arrived (the first clock reading counts as arrival: the connection has
    /// just been established).
    last_received: Tick,
    /// When our last keepalive ping was queued.
    last_ping: Tick,
    /// When output last was empty or last made progress.
    output_since: Tick,
}

/// A reading of the caller's clock as nanoseconds after [`Timers::start`], or none: an
/// `Option<u64>` in 8 bytes, `u64::MAX` standing for `None` (584 years after the start, a
/// reading saturates below it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tick(u64);

impl Tick {
    const NONE: Tick = Tick(u64::MAX);

    /// `t` as a tick after `start` (0 for an earlier `t`).
    fn since(start: Instant, t: Instant) -> Tick {
        let nanos = t.saturating_duration_since(start).as_nanos();
        Tick(u64::try_from(nanos).map_or(u64::MAX - 1, |n| n.min(u64::MAX - 1)))
    }

    /// Nanoseconds after the start, or `None`.
    fn get(self) -> Option<u64> {
        (self != Self::NONE).then_some(self.0)
    }
}

impl Default for Tick {
    fn default() -> Self {
        Tick::NONE
    }
}

impl Timers {
    /// Bytes arrived from the peer.
    pub(super) fn note_received(&mut self) {
        if self.now != Tick::NONE {
            self.last_received = self.now;
        }
    }

    /// The transport took output, or output starts waiting after being empty.
    pub(super) fn note_output_progress(&mut self) {
        if self.now != Tick::NONE {
            self.output_since = self.now;
        }
    }

    /// Record `now`, the latest reading (never earlier than the one before); returns it as a
    /// tick.
    fn set_now(&mut self, now: Instant) -> Tick {
        let start = *self.start.get_or_insert(now);
        let now = Tick::since(start, now);
        // The clock never goes back.
        if self.now == Tick::NONE || now.0 > self.now.0 {
            self.now = now;
        }
        self.now
    }

    /// The latest time the caller gave, if any.
    fn now(&self) -> Option<Instant> {
        self.instant(self.now)
    }

    /// `tick` as an instant of the caller's clock.
    fn instant(&self, tick: Tick) -> Option<Instant> {
        self.start?.checked_add(Duration::from_nanos(tick.get()?))
    }

    /// `tick + interval`, or `None` for a timer that is off (`None`, zero), not started
    /// (`tick` none) or too far away to represent.
    fn deadline(&self, tick: Tick, interval: Option<Duration>) -> Option<Instant> {
        let interval = interval.filter(|d| !d.is_zero())?;
        self.instant(tick)?.checked_add(interval)
    }
}

/// Time: keepalive pings, the idle timeout and the write timeout (see [`Config`](crate::Config)).
impl Connection {
    /// Tell the connection the current time; input and commands that follow happen at `now`.
    ///
    /// Needed only when a timer is configured ([`Config::ping_interval`],
    /// [`Config::idle_timeout`], [`Config::write_timeout`](crate::Config::write_timeout)): call it
    /// before [`receive_data`](Self::receive_data) (received bytes reset the idle clock) and
    /// before [`consume_output`](Self::consume_output) and the `send_*` commands (progress of the
    /// output resets the write clock). The first call starts the clocks, as if the peer had just
    /// been heard from. The clock never goes back: an earlier `now` than one given before counts
    /// as that one.
    ///
    /// [`Config::ping_interval`]: crate::Config::ping_interval
    /// [`Config::idle_timeout`]: crate::Config::idle_timeout
    #[inline]
    pub fn set_now(&mut self, now: Instant) {
        let now = self.timers.set_now(now);
        if self.timers.last_received == Tick::NONE {
            self.timers.last_received = now;
        }
        if !self.output().is_empty() && self.timers.output_since == Tick::NONE {
            self.timers.output_since = now;
        }
    }

    /// The earliest time at which [`handle_timeout`](Self::handle_timeout) has something to do:
    /// arm one timer for it (re-arm after every call that may move it). `None`: no timer needed,
    /// because none is configured, the clock was never given, or the connection is closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Called on every turn of an adapter's loop: plain comparisons, no iterator chain.
        fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, None) => a,
                (None, b) => b,
            }
        }
        self.timers.start?;
        let ping_idle = earliest(self.ping_deadline(), self.idle_deadline());
        earliest(ping_idle, self.write_deadline())
    }

    /// The time is `now` (as [`set_now`](Self::set_now)); act on every deadline that has passed.
    ///
    /// - Keepalive: queue a ping (empty payload) when nothing was received for
    ///   [`Config::ping_interval`](crate::Config::ping_interval) since the last data or the last
    ///   ping. The peer's pong comes back as an [`Event::Pong`](crate::Event::Pong) like any
    ///   other.
    /// - Idle and write timeouts: close the connection abnormally (see [`TimeoutError`]).
    ///
    /// Calling it early is harmless. Afterwards [`poll_timeout`](Self::poll_timeout) is later
    /// than `now`, or `None`.
    ///
    /// # Errors
    ///
    /// The [`TimeoutError`] that closed the connection, once: the state is then
    /// [`State::Closed`], [`should_close_transport`](Self::should_close_transport) is true, the
    /// output is empty (no close frame is sent), and later input is ignored. Events decoded
    /// before stay available from [`poll_event`](Self::poll_event).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), TimeoutError> {
        self.set_now(now);
        let Some(now) = self.timers.now() else {
            return Ok(());
        };
        let passed = |deadline: Option<Instant>| deadline.is_some_and(|d| d <= now);
        if passed(self.idle_deadline()) {
            self.abandon();
            return Err(TimeoutError::Idle);
        }
        if passed(self.write_deadline()) {
            self.abandon();
            return Err(TimeoutError::Write);
        }
        if passed(self.ping_deadline()) {
            // §5.5.2: "a means to verify that the remote endpoint is still responsive"; the
            // peer MUST answer, and its pong (any byte, really) ends the silence.
            self.write_frame(true, OpCode::Ping, &[]);
            self.awaiting_pong = true;
            self.timers.last_ping = self.timers.now;
        }
        Ok(())
    }

    /// When the next keepalive ping is due: only while open (§5.5.1: nothing follows our close,
    /// and a ping after the peer's close would go unanswered).
    fn ping_deadline(&self) -> Option<Instant> {
        // The configuration first: with keepalive off (the default) nothing else is looked at,
        // and this runs on every turn of an adapter's loop.
        let interval = self.config.ping_interval.filter(|d| !d.is_zero())?;
        if self.state() != State::Open {
            return None;
        }
        // The later of the two (a tick that is none is earlier than any).
        let since = match (self.timers.last_received.get(), self.timers.last_ping.get()) {
            (Some(a), Some(b)) => Tick(a.max(b)),
            (Some(_), None) => self.timers.last_received,
            (None, _) => self.timers.last_ping,
        };
        self.timers.deadline(since, Some(interval))
    }

    /// When the peer counts as dead, unless something arrives first.
    fn idle_deadline(&self) -> Option<Instant> {
        // As in `ping_deadline`: off by default, and then nothing else is looked at.
        let timeout = self.config.idle_timeout.filter(|d| !d.is_zero())?;
        if self.state() == State::Closed {
            return None;
        }
        self.timers
            .deadline(self.timers.last_received, Some(timeout))
    }

    /// When waiting output counts as stalled. It applies in every state: a close frame the peer
    /// never reads must not hold the connection either.
    fn write_deadline(&self) -> Option<Instant> {
        if self.output().is_empty() {
            return None;
        }
        self.timers
            .deadline(self.timers.output_since, self.config.write_timeout)
    }

    /// Close abnormally: stop reading, and drop the output, close frame included (§7.1.7: a
    /// close frame may be omitted when the peer is unlikely to receive and process it).
    fn abandon(&mut self) {
        self.failed = true;
        self.sending = None;
        self.out = Vec::new();
        self.out_pos = 0;
        // The input in progress, queued payloads and a failure's close frame still waiting for
        // earlier events go with the rest; the peer's close frame, if it came, stays on record.
        let peer_close = self.spill.take().and_then(|spill| spill.peer_close);
        if peer_close.is_some() {
            self.spill_mut().peer_close = peer_close;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_WRITE_TIMEOUT;
    use crate::frame::{CloseCode, FrameHeader};
    use crate::random::SeededRandom;
    use crate::role::Role;
    use crate::{Config, Event};

    const SEC: Duration = Duration::from_secs(1);

    fn keepalive(ping: u64, idle: u64) -> Config {
        Config {
            ping_interval: Some(Duration::from_secs(ping)),
            idle_timeout: Some(Duration::from_secs(idle)),
            ..Config::default()
        }
    }

    /// A connection whose clock starts at `t0`.
    fn started(role: Role, config: Config, t0: Instant) -> Connection {
        let mut conn = Connection::with_random(role, config, Box::new(SeededRandom::new(3)));
        conn.set_now(t0);
        conn
    }

    /// Everything `conn` wants to write, marked as written.
    fn take_output(conn: &mut Connection) -> Vec<u8> {
        let bytes = conn.output().to_vec();
        conn.consume_output(bytes.len());
        bytes
    }

    /// The opcodes of the whole frames in `bytes`.
    fn opcodes(mut bytes: &[u8]) -> Vec<OpCode> {
        let mut out = Vec::new();
        while let Some((header, len)) = FrameHeader::decode(bytes).unwrap() {
            out.push(header.opcode);
            bytes = &bytes[len + usize::try_from(header.payload_len).unwrap()..];
        }
        out
    }

    /// An empty masked pong, as a client answers our ping.
    const CLIENT_PONG: [u8; 6] = [0x8A, 0x80, 1, 2, 3, 4];

    #[test]
    fn no_timer_runs_by_default_or_without_a_clock() {
        let t0 = Instant::now();
        let mut conn = started(Role::Server, Config::default(), t0);
        assert_eq!(conn.poll_timeout(), None, "no keepalive by default");
        assert_eq!(conn.handle_timeout(t0 + 3600 * SEC), Ok(()));
        assert!(conn.output().is_empty(), "no ping by default");

        // Keepalive configured, but the caller never gave the time.
        let mut conn = Connection::with_random(
            Role::Server,
            keepalive(1, 2),
            Box::new(SeededRandom::new(3)),
        );
        conn.send_text("waiting").unwrap();
        assert_eq!(conn.poll_timeout(), None);
    }

    #[test]
    fn silent_peer_is_pinged_after_the_interval_and_again_after_each_interval() {
        let t0 = Instant::now();
        let mut conn = started(Role::Server, keepalive(10, 60), t0);
        assert_eq!(conn.poll_timeout(), Some(t0 + 10 * SEC));
        conn.handle_timeout(t0 + 9 * SEC).unwrap();
        assert!(conn.output().is_empty(), "no ping before the interval");

        assert!(!conn.awaiting_pong());
        conn.handle_timeout(t0 + 10 * SEC).unwrap();
        assert_eq!(opcodes(&take_output(&mut conn)), [OpCode::Ping]);
        assert!(conn.awaiting_pong(), "the keepalive's ping awaits its pong");
        assert_eq!(conn.poll_timeout(), Some(t0 + 20 * SEC));
        conn.handle_timeout(t0 + 20 * SEC).unwrap();
        assert_eq!(opcodes(&take_output(&mut conn)), [OpCode::Ping]);
        assert_eq!(conn.state(), State::Open);
    }

    #[test]
    fn received_bytes_postpone_the_ping() {
        let t0 = Instant::now();
        let mut conn = started(Role::Client, keepalive(10, 60), t0);
        conn.set_now(t0 + 8 * SEC);
        conn.receive_data(&[0x81, 0x02, b'h', b'i']).unwrap();
        assert_eq!(conn.poll_timeout(), Some(t0 + 18 * SEC));
        conn.handle_timeout(t0 + 10 * SEC).unwrap();
        assert!(conn.output().is_empty());
        assert_eq!(conn.poll_event(), Some(Event::Text("hi".into())));
    }

    #[test]
    fn sending_does_not_count_as_hearing_from_the_peer() {
        let t0 = Instant::now();
        let mut conn = started(Role::Server, keepalive(10, 30), t0);
        for s in 1..10 {
            conn.set_now(t0 + s * SEC);
            conn.send_text("chatty").unwrap();
            take_output(&mut conn);
        }
        conn.handle_timeout(t0 + 10 * SEC).unwrap();
        assert_eq!(opcodes(&take_output(&mut conn)), [OpCode::Ping]);
        assert_eq!(conn.handle_timeout(t0 + 30 * SEC), Err(TimeoutError::Idle));
    }

    #[test]
    fn dead_peer_is_dropped_at_the_idle_timeout_without_a_close_frame() {
        let t0 = Instant::now();
        let mut conn = started(Role::Server, keepalive(10, 25), t0);
        conn.handle_timeout(t0 + 10 * SEC).unwrap();
        conn.handle_timeout(t0 + 20 * SEC).unwrap();
        // Two pings queued, the transport stuck: they are dropped with the connection.
        assert_eq!(conn.output().len(), 4);
        assert_eq!(conn.poll_timeout(), Some(t0 + 25 * SEC));
        assert_eq!(conn.handle_timeout(t0 + 25 * SEC), Err(TimeoutError::Idle));
        assert_eq!(conn.state(), State::Closed);
        assert!(conn.should_close_transport());
        assert!(conn.output().is_empty(), "1006: no close frame (§7.1.7)");
        assert_eq!(TimeoutError::Idle.close_code(), CloseCode::ABNORMAL);

        // Reported once; nothing left to time; the connection takes no more.
        assert_eq!(conn.poll_timeout(), None);
        assert_eq!(conn.handle_timeout(t0 + 99 * SEC), Ok(()));
        conn.receive_data(&CLIENT_PONG).unwrap();
        assert_eq!(conn.poll_event(), None);
        assert!(conn.send_text("late").is_err());
        assert!(conn.output().is_empty());
    }

    #[test]
    fn live_peer_that_answers_pings_outlives_the_idle_timeout() {
        let t0 = Instant::now();
        let mut conn = started(Role::Server, keepalive(10, 15), t0);
        let mut now = t0;
        // Two minutes of silence from the application, with the peer answering every ping.
        while now < t0 + 120 * SEC {
            now = conn.poll_timeout().expect("keepalive armed");
            conn.handle_timeout(now).unwrap();
            assert_eq!(opcodes(&take_output(&mut conn)), [OpCode::Ping]);
            // The pong comes back 2 s later.
            now += 2 * SEC;
            conn.set_now(now);
            conn.receive_data(&CLIENT_PONG).unwrap();
            assert_eq!(conn.poll_event(), Some(Event::Pong(bytes::Bytes::new())));
        }
        assert_eq!(conn.state(), State::Open);
    }

    #[test]
    fn idle_timeout_without_pings_drops_a_silent_peer() {
        let t0 = Instant::now();
        let config = Config {
            idle_timeout: Some(5 * SEC),
            ..Config::default()
        };
        let mut conn = started(Role::Client, config, t0);
        assert_eq!(conn.poll_timeout(), Some(t0 + 5 * SEC));
        assert_eq!(conn.handle_timeout(t0 + 6 * SEC), Err(TimeoutError::Idle));
        assert!(conn.should_close_transport(), "a client closes too");
    }

    #[test]
    fn zero_durations_turn_timers_off() {
        let t0 = Instant::now();
        let mut config = keepalive(0, 0);
        config.write_timeout = Some(Duration::ZERO);
        let mut conn = started(Role::Server, config, t0);
        conn.send_text("stuck").unwrap();
        assert_eq!(conn.poll_timeout(), None);
        assert_eq!(conn.handle_timeout(t0 + 3600 * SEC), Ok(()));
    }

    #[test]
    fn no_keepalive_ping_once_closing() {
        let t0 = Instant::now();
        let mut conn = started(Role::Server, keepalive(10, 60), t0);
        conn.send_close(CloseCode::NORMAL, "").unwrap();
        take_output(&mut conn);
        assert_eq!(
            conn.poll_timeout(),
            Some(t0 + 60 * SEC),
            "only the idle timeout"
        );
        conn.handle_timeout(t0 + 30 * SEC).unwrap();
        assert!(conn.output().is_empty(), "§5.5.1: nothing after our close");
    }

    #[test]
    fn stalled_output_fails_at_the_write_timeout() {
        let t0 = Instant::now();
        let mut conn = started(Role::Server, Config::default(), t0);
        assert_eq!(
            conn.poll_timeout(),
            None,
            "nothing waiting, nothing to time"
        );
        conn.set_now(t0 + 100 * SEC);
        conn.send_binary(&[0; 1000]).unwrap();
        assert_eq!(
            conn.poll_timeout(),
            Some(t0 + 100 * SEC + DEFAULT_WRITE_TIMEOUT)
        );
        // The transport takes a little: the clock starts over.
        conn.set_now(t0 + 110 * SEC);
        conn.consume_output(10);
        let stalled_at = t0 + 110 * SEC + DEFAULT_WRITE_TIMEOUT;
        assert_eq!(conn.poll_timeout(), Some(stalled_at));
        conn.handle_timeout(stalled_at - SEC).unwrap();
        assert_eq!(conn.handle_timeout(stalled_at), Err(TimeoutError::Write));
        assert_eq!(conn.state(), State::Closed);
        assert!(conn.should_close_transport());
        assert!(conn.output().is_empty(), "the stuck output is dropped");
        assert!(conn.send_binary(b"more").is_err());
    }

    #[test]
    fn output_written_in_time_never_times_out() {
        let t0 = Instant::now();
        let mut conn = started(Role::Client, Config::default(), t0);
        let mut now = t0;
        for _ in 0..10 {
            conn.send_binary(&[7; 100]).unwrap();
            now += DEFAULT_WRITE_TIMEOUT / 2;
            conn.set_now(now);
            take_output(&mut conn);
            assert_eq!(conn.poll_timeout(), None);
        }
        assert_eq!(conn.handle_timeout(now + DEFAULT_WRITE_TIMEOUT * 2), Ok(()));
        assert_eq!(conn.state(), State::Open);
    }

    #[test]
    fn write_timeout_bounds_a_close_frame_the_peer_never_reads() {
        let t0 = Instant::now();
        let mut conn = started(Role::Server, Config::default(), t0);
        conn.send_close(CloseCode::GOING_AWAY, "bye").unwrap();
        assert_eq!(
            conn.handle_timeout(t0 + DEFAULT_WRITE_TIMEOUT),
            Err(TimeoutError::Write)
        );
        assert!(conn.should_close_transport());
    }

    #[test]
    fn clock_given_late_starts_the_write_clock_for_waiting_output() {
        let t0 = Instant::now();
        let mut conn = Connection::with_random(
            Role::Server,
            Config::default(),
            Box::new(SeededRandom::new(3)),
        );
        conn.send_text("queued before any clock").unwrap();
        conn.set_now(t0);
        assert_eq!(conn.poll_timeout(), Some(t0 + DEFAULT_WRITE_TIMEOUT));
    }

    #[test]
    fn clock_does_not_go_back() {
        let t0 = Instant::now() + 100 * SEC;
        let mut conn = started(Role::Server, keepalive(10, 60), t0);
        conn.set_now(t0 - 50 * SEC);
        conn.receive_data(&CLIENT_PONG).unwrap();
        assert_eq!(conn.poll_timeout(), Some(t0 + 10 * SEC));
        conn.handle_timeout(t0 + 10 * SEC).unwrap();
        assert_eq!(conn.poll_timeout(), Some(t0 + 20 * SEC));
    }

    #[test]
    fn poll_timeout_is_later_than_now_after_handle_timeout() {
        // The adapter loop relies on it: a deadline at or before `now` would spin.
        let t0 = Instant::now();
        let configs = [keepalive(1, 3), keepalive(3, 1), keepalive(1, 1)];
        for config in configs {
            let mut conn = started(Role::Client, config, t0);
            let mut now = t0;
            while let Some(deadline) = conn.poll_timeout() {
                assert!(deadline > now, "{deadline:?} <= {now:?}");
                now = deadline;
                let _ = conn.handle_timeout(now);
            }
            assert_eq!(conn.state(), State::Closed);
        }
    }
}
