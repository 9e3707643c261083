//! Keepalive and deadlines: when to ping, when the peer is dead, when output has stalled, when
//! the close handshake has taken too long.
//!
//! The core has no clock. Time comes in as the `now` argument of the calls that need it
//! ([`Connection::receive_data`], [`Connection::receive_buf`], [`Connection::poll_timeout`],
//! [`Connection::handle_timeout`]), and the caller arms one timer for what
//! [`Connection::poll_timeout`] returns. What happens in a call without the time (output starting
//! to wait, output progress, our close frame) is stamped with the next time given, which the
//! caller gives when it re-arms the timer after that call. Everything is decided from those
//! readings alone, so tests run on simulated time.

use std::time::{Duration, Instant};

use super::state::{End, Phase};
use super::Connection;
use crate::error::TimeoutError;
use crate::frame::OpCode;

/// What the deadlines are computed from. Every instant is a reading of the caller's clock.
///
/// Readings are kept as nanoseconds after the first one ([`Tick`], 8 bytes) rather than as
/// `Option<Instant>` (16 bytes each): the struct sits in every connection. The clock never goes
/// back (an earlier reading counts as the latest one), so no reading is before the first, and
/// nanoseconds are exact: `start + (t - start)` is `t` again.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Timers {
    /// The first time the caller gave; `None` until then, and no timer runs before it.
    start: Option<Instant>,
    /// The latest time the caller gave (none until `start` is set).
    now: Tick,
    /// When bytes last arrived (the first clock reading counts as arrival: the connection has
    /// just been established).
    last_received: Tick,
    /// When output last was empty or last made progress ([`Tick::PENDING`]: at the next
    /// reading).
    output_since: Tick,
    /// One slot for two instants that are never needed at once (8 bytes fewer in every
    /// connection): while the connection is open, when our last keepalive ping was queued;
    /// once it is not (keepalive pings stop then, §5.5.1), when the close handshake must be
    /// over ([`Tick::PENDING`] until the reading after it started, [`Tick::PASSED`] once acted
    /// on, none without a bound). [`Timers::start_closing`] switches from one to the other.
    ping_or_close: Tick,
}

/// A reading of the caller's clock as nanoseconds after [`Timers::start`], or one of three
/// markers: an `Option<u64>` and more in 8 bytes (584 years after the start, a reading saturates
/// below the markers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tick(u64);

impl Tick {
    /// No reading.
    const NONE: Tick = Tick(u64::MAX);
    /// The next reading, when it comes.
    const PENDING: Tick = Tick(u64::MAX - 1);
    /// A deadline that has passed and was acted on.
    const PASSED: Tick = Tick(u64::MAX - 2);
    /// The largest reading.
    const LATEST: u64 = u64::MAX - 3;

    /// `t` as a tick after `start` (0 for an earlier `t`).
    fn since(start: Instant, t: Instant) -> Tick {
        let nanos = t.saturating_duration_since(start).as_nanos();
        Tick(u64::try_from(nanos).map_or(Self::LATEST, |n| n.min(Self::LATEST)))
    }

    /// Nanoseconds after the start, if this is a reading.
    fn get(self) -> Option<u64> {
        (self.0 <= Self::LATEST).then_some(self.0)
    }

    /// `self + d`, saturating at the largest reading.
    fn after(self, d: Duration) -> Tick {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Tick(self.0.saturating_add(nanos).min(Self::LATEST))
    }
}

impl Default for Tick {
    fn default() -> Self {
        Tick::NONE
    }
}

impl Timers {
    /// A reading of the clock: record it (never earlier than the one before), stamp what waited
    /// for it (a close handshake that started counts `close_timeout_ms`, `u32::MAX`: no bound),
    /// and return it as a tick.
    #[inline]
    fn advance(&mut self, now: Instant, close_timeout_ms: u32) -> Tick {
        let start = *self.start.get_or_insert(now);
        let now = Tick::since(start, now);
        // The clock never goes back.
        if self.now == Tick::NONE || now.0 > self.now.0 {
            self.now = now;
        }
        let now = self.now;
        if self.last_received == Tick::NONE {
            self.last_received = now;
        }
        if self.output_since == Tick::PENDING {
            self.output_since = now;
        }
        if self.ping_or_close == Tick::PENDING {
            self.ping_or_close = match close_timeout_ms {
                u32::MAX => Tick::NONE,
                ms => now.after(Duration::from_millis(ms.into())),
            };
        }
        now
    }

    /// Bytes (`any`) arrived from the peer at `now`; `timed` says whether arrivals matter (a
    /// keepalive or an idle timeout is configured). The reading is skipped when nothing would
    /// change with it: the clock started, no stamp waiting for it, arrivals not timed (every
    /// deadline is computed from a reading of its own).
    #[inline]
    pub(super) fn received(&mut self, now: Instant, any: bool, timed: bool, close_timeout_ms: u32) {
        let waiting = self.start.is_none()
            || self.output_since == Tick::PENDING
            || self.ping_or_close == Tick::PENDING;
        if !timed && !waiting {
            return;
        }
        let now = self.advance(now, close_timeout_ms);
        if any {
            self.last_received = now;
        }
    }

    /// Output starts waiting after being empty: the write timeout counts from here.
    #[inline]
    pub(super) fn output_started(&mut self) {
        self.output_since = Tick::PENDING;
    }

    /// The transport took output: the write timeout starts over.
    #[inline]
    pub(super) fn output_progressed(&mut self) {
        self.output_since = Tick::PENDING;
    }

    /// The connection left the open state: the close handshake's deadline starts (the slot no
    /// longer holds the last keepalive ping, which is needed only while open).
    pub(super) fn start_closing(&mut self) {
        self.ping_or_close = Tick::PENDING;
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

/// `d` in milliseconds, rounded up (a bound is never shorter than asked); `u32::MAX` (none) for
/// `None` and from `u32::MAX` milliseconds (about 49.7 days) on.
pub(super) fn millis_up(d: Option<Duration>) -> u32 {
    d.map_or(u32::MAX, |d| {
        u32::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u32::MAX)
    })
}

/// Time: keepalive pings, the idle, write and close-handshake timeouts (see
/// [`Config`](crate::Config)).
impl Connection {
    /// Input arrived at `now` (`any`: some bytes).
    #[inline]
    pub(super) fn note_received(&mut self, now: Instant, any: bool) {
        let timed = self.config.ping_interval.is_some_and(|d| !d.is_zero())
            || self.config.idle_timeout.is_some_and(|d| !d.is_zero());
        self.timers.received(now, any, timed, self.close_timeout_ms);
    }

    /// Bound the close handshake of this connection by `timeout` instead of
    /// [`Config::close_timeout`](crate::Config::close_timeout) (`None`: no bound). A wait that
    /// has already started keeps its deadline.
    ///
    /// The bound is kept in whole milliseconds, rounded up, so the handshake is never cut
    /// shorter than asked (a timeout of 1 µs waits 1 ms). A timeout of `u32::MAX` milliseconds
    /// (about 49.7 days) or more does not bound the handshake at all.
    pub fn set_close_timeout(&mut self, timeout: Option<Duration>) {
        self.close_timeout_ms = millis_up(timeout);
    }

    /// The time is `now`: the earliest time at which [`handle_timeout`](Self::handle_timeout)
    /// has something to do. Arm one timer for it, and call this again after every call that may
    /// move it (input, commands, consumed output). `None`: no timer needed, because none is
    /// configured or nothing is waiting for one.
    ///
    /// What happened in calls without the time (output starting to wait or making progress, our
    /// close frame queued) counts from this `now`.
    #[inline]
    pub fn poll_timeout(&mut self, now: Instant) -> Option<Instant> {
        // The reading matters only to start the clocks or stamp what waits for it (deadlines are
        // computed from the stamps, not from `now`): skipped otherwise, as on most turns of an
        // adapter's loop.
        let waiting = self.timers.start.is_none()
            || (self.timers.output_since == Tick::PENDING && !self.output.is_empty())
            || self.timers.ping_or_close == Tick::PENDING;
        if waiting {
            self.timers.advance(now, self.close_timeout_ms);
        }
        self.next_deadline()
    }

    /// The earliest deadline, from the readings so far.
    fn next_deadline(&self) -> Option<Instant> {
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
        earliest(
            ping_idle,
            earliest(self.write_deadline(), self.close_deadline()),
        )
    }

    /// The time is `now`; act on every deadline that has passed.
    ///
    /// - Keepalive: queue a ping (empty payload) when nothing was received for
    ///   [`Config::ping_interval`](crate::Config::ping_interval) since the last data or the last
    ///   ping. The peer's pong comes back as an [`Event::Pong`](crate::Event::Pong) like any
    ///   other.
    /// - Idle and write timeouts: close the connection abnormally (see [`TimeoutError`]).
    /// - The close handshake's timeout
    ///   ([`Config::close_timeout`](crate::Config::close_timeout), from when the connection
    ///   stopped being open): give up on the transport. A client whose close handshake is
    ///   complete and whose output is written only missed the server's EOF, a clean end; a
    ///   connection that failed keeps its failure and drops the close frame it could not write;
    ///   anything else ends with [`TimeoutError::Close`]. Afterwards
    ///   [`close_timed_out`](Self::close_timed_out) is true: close the transport without waiting
    ///   further (for its shutdown to complete, or for EOF).
    ///
    /// Calling it early is harmless. Afterwards [`poll_timeout`](Self::poll_timeout) is later
    /// than `now`, or `None`.
    ///
    /// # Errors
    ///
    /// The [`TimeoutError`] that ended the connection, once: the state is then
    /// [`State::Closed`](crate::State::Closed),
    /// [`should_close_transport`](Self::should_close_transport) is true, the output is empty (no
    /// close frame is sent), and later input is ignored.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), TimeoutError> {
        let tick = self.timers.advance(now, self.close_timeout_ms);
        let Some(now) = self.timers.instant(tick) else {
            return Ok(());
        };
        let passed = |deadline: Option<Instant>| deadline.is_some_and(|d| d <= now);
        if passed(self.idle_deadline()) {
            self.abandon(TimeoutError::Idle);
            return Err(TimeoutError::Idle);
        }
        if passed(self.write_deadline()) {
            self.abandon(TimeoutError::Write);
            return Err(TimeoutError::Write);
        }
        if passed(self.close_deadline()) {
            return self.close_deadline_passed();
        }
        if passed(self.ping_deadline()) {
            // §5.5.2: "a means to verify that the remote endpoint is still responsive"; the
            // peer MUST answer, and its pong (any byte, really) ends the silence.
            self.write_frame(true, OpCode::Ping, &[]);
            self.awaiting_pong = true;
            self.timers.ping_or_close = self.timers.now;
        }
        Ok(())
    }

    /// Whether the close handshake's deadline has passed (see
    /// [`handle_timeout`](Self::handle_timeout)): close the transport now, without waiting for
    /// its shutdown to complete or for the peer's EOF.
    pub fn close_timed_out(&self) -> bool {
        !self.phase.is_open() && self.timers.ping_or_close == Tick::PASSED
    }

    /// When the next keepalive ping is due: only while open (§5.5.1: nothing follows our close,
    /// and a ping after the peer's close would go unanswered).
    fn ping_deadline(&self) -> Option<Instant> {
        // The configuration first: with keepalive off (the default) nothing else is looked at,
        // and this runs on every turn of an adapter's loop.
        let interval = self.config.ping_interval.filter(|d| !d.is_zero())?;
        if !self.phase.is_open() {
            return None;
        }
        // The later of the two (a tick that is none is earlier than any).
        let last_ping = self.timers.ping_or_close;
        let since = match (self.timers.last_received.get(), last_ping.get()) {
            (Some(a), Some(b)) => Tick(a.max(b)),
            (Some(_), None) => self.timers.last_received,
            (None, _) => last_ping,
        };
        self.timers.deadline(since, Some(interval))
    }

    /// When the peer counts as dead, unless something arrives first: while its input still
    /// matters (until its close frame).
    fn idle_deadline(&self) -> Option<Instant> {
        // As in `ping_deadline`: off by default, and then nothing else is looked at.
        let timeout = self.config.idle_timeout.filter(|d| !d.is_zero())?;
        if !self.phase.receiving() {
            return None;
        }
        self.timers
            .deadline(self.timers.last_received, Some(timeout))
    }

    /// When waiting output counts as stalled. It applies in every state: a close frame the peer
    /// never reads must not hold the connection either.
    fn write_deadline(&self) -> Option<Instant> {
        if self.output.is_empty() {
            return None;
        }
        self.timers
            .deadline(self.timers.output_since, self.config.write_timeout)
    }

    /// When the close handshake must be over.
    fn close_deadline(&self) -> Option<Instant> {
        if self.phase.is_open() {
            return None;
        }
        self.timers.instant(self.timers.ping_or_close)
    }

    /// The close handshake's deadline passed (see [`handle_timeout`](Self::handle_timeout)).
    fn close_deadline_passed(&mut self) -> Result<(), TimeoutError> {
        self.timers.ping_or_close = Tick::PASSED;
        match self.phase {
            // Only the server's EOF is missing: a clean end.
            Phase::AwaitingEof if self.output.is_empty() => {
                self.phase = Phase::Ended(End::Clean);
                Ok(())
            }
            // The failure stands; the close frame that could not be written goes.
            Phase::Ended(End::Failed(_)) => {
                self.output.clear();
                self.unsent_answers = 0;
                Ok(())
            }
            // Over, and everything written: only the transport's shutdown is left.
            Phase::Ended(End::Clean) if self.output.is_empty() => Ok(()),
            Phase::Ended(End::TimedOut(_)) => Ok(()),
            Phase::Open | Phase::CloseSent | Phase::AwaitingEof | Phase::Ended(End::Clean) => {
                self.abandon(TimeoutError::Close);
                Err(TimeoutError::Close)
            }
        }
    }

    /// Close abnormally: stop reading, and drop the output, close frame included (§7.1.7: a
    /// close frame may be omitted when the peer is unlikely to receive and process it).
    fn abandon(&mut self, err: TimeoutError) {
        self.stop_receiving();
        self.enter(Phase::Ended(End::TimedOut(err)));
        self.sending = None;
        self.output.clear();
        self.unsent_answers = 0;
        // The close handshake's bound still limits how long the transport's shutdown may take.
    }
}

#[cfg(test)]
mod tests {
    use gangway_test_support::opcodes;

    use super::*;
    use crate::config::{DEFAULT_CLOSE_TIMEOUT, DEFAULT_WRITE_TIMEOUT};
    use crate::connection::tests::pair::{
        client_with, endpoint_with, events, server_with, take_output, to, ROLES,
    };
    use crate::frame::CloseCode;
    use crate::role::Role;
    use crate::{Config, Event, State};

    const SEC: Duration = Duration::from_secs(1);
    const PING: u8 = 0x9;

    fn keepalive(ping: u64, idle: u64) -> Config {
        Config {
            ping_interval: Some(Duration::from_secs(ping)),
            idle_timeout: Some(Duration::from_secs(idle)),
            ..Config::default()
        }
    }

    /// A connection whose clock starts at `t0`.
    fn started(role: Role, config: Config, t0: Instant) -> Connection {
        let mut conn = endpoint_with(role, config);
        conn.poll_timeout(t0);
        conn
    }

    /// An empty masked pong, as a client answers our ping.
    const CLIENT_PONG: [u8; 6] = [0x8A, 0x80, 1, 2, 3, 4];

    #[test]
    fn no_timer_runs_by_default_or_without_a_clock() {
        let t0 = Instant::now();
        let mut conn = started(Role::Server, Config::default(), t0);
        assert_eq!(conn.poll_timeout(t0), None, "no keepalive by default");
        assert_eq!(conn.handle_timeout(t0 + 3600 * SEC), Ok(()));
        assert!(conn.output().is_empty(), "no ping by default");

        // Keepalive configured, but the caller never gave the time: nothing is due, whatever
        // the output holds.
        let mut conn = server_with(keepalive(1, 2));
        conn.send_text("waiting").unwrap();
        assert_eq!(conn.next_deadline(), None);
    }

    #[test]
    fn silent_peer_is_pinged_after_the_interval_and_again_after_each_interval() {
        let t0 = Instant::now();
        let mut conn = started(Role::Server, keepalive(10, 60), t0);
        assert_eq!(conn.poll_timeout(t0), Some(t0 + 10 * SEC));
        conn.handle_timeout(t0 + 9 * SEC).unwrap();
        assert!(conn.output().is_empty(), "no ping before the interval");

        assert!(!conn.awaiting_pong());
        conn.handle_timeout(t0 + 10 * SEC).unwrap();
        assert_eq!(opcodes(&take_output(&mut conn)), [PING]);
        assert!(conn.awaiting_pong(), "the keepalive's ping awaits its pong");
        assert_eq!(conn.poll_timeout(t0 + 10 * SEC), Some(t0 + 20 * SEC));
        conn.handle_timeout(t0 + 20 * SEC).unwrap();
        assert_eq!(opcodes(&take_output(&mut conn)), [PING]);
        assert_eq!(conn.state(), State::Open);
    }

    #[test]
    fn received_bytes_postpone_the_ping() {
        let t0 = Instant::now();
        let mut conn = started(Role::Client, keepalive(10, 60), t0);
        conn.receive_data(&[0x81, 0x02, b'h', b'i'], t0 + 8 * SEC);
        assert_eq!(conn.poll_timeout(t0 + 8 * SEC), Some(t0 + 18 * SEC));
        conn.handle_timeout(t0 + 10 * SEC).unwrap();
        assert!(conn.output().is_empty());
        assert_eq!(events(&mut conn), [Event::Text("hi".into())]);
    }

    #[test]
    fn sending_does_not_count_as_hearing_from_the_peer() {
        let t0 = Instant::now();
        let mut conn = started(Role::Server, keepalive(10, 30), t0);
        for s in 1..10 {
            conn.send_text("chatty").unwrap();
            conn.poll_timeout(t0 + s * SEC);
            take_output(&mut conn);
        }
        conn.handle_timeout(t0 + 10 * SEC).unwrap();
        assert_eq!(opcodes(&take_output(&mut conn)), [PING]);
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
        assert_eq!(conn.poll_timeout(t0 + 20 * SEC), Some(t0 + 25 * SEC));
        assert_eq!(conn.handle_timeout(t0 + 25 * SEC), Err(TimeoutError::Idle));
        assert_eq!(conn.state(), State::Closed);
        assert_eq!(conn.ended(), Some(End::TimedOut(TimeoutError::Idle)));
        assert!(conn.should_close_transport());
        assert!(conn.output().is_empty(), "1006: no close frame (§7.1.7)");
        assert_eq!(TimeoutError::Idle.close_code(), CloseCode::ABNORMAL);

        // Reported once; the only deadline left bounds the transport's shutdown; the connection
        // takes no more.
        assert_eq!(
            conn.poll_timeout(t0 + 25 * SEC),
            Some(t0 + 25 * SEC + DEFAULT_CLOSE_TIMEOUT)
        );
        assert_eq!(conn.handle_timeout(t0 + 99 * SEC), Ok(()));
        assert!(conn.close_timed_out());
        assert_eq!(conn.poll_timeout(t0 + 99 * SEC), None);
        conn.receive_data(&CLIENT_PONG, t0 + 99 * SEC);
        assert_eq!(conn.poll_event(), Ok(None));
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
            now = conn.poll_timeout(now).expect("keepalive armed");
            conn.handle_timeout(now).unwrap();
            assert_eq!(opcodes(&take_output(&mut conn)), [PING]);
            // The pong comes back 2 s later.
            now += 2 * SEC;
            conn.receive_data(&CLIENT_PONG, now);
            assert_eq!(events(&mut conn), [Event::Pong(bytes::Bytes::new())]);
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
        assert_eq!(conn.poll_timeout(t0), Some(t0 + 5 * SEC));
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
        assert_eq!(conn.poll_timeout(t0), None);
        assert_eq!(conn.handle_timeout(t0 + 3600 * SEC), Ok(()));
    }

    #[test]
    fn no_keepalive_ping_once_closing() {
        let t0 = Instant::now();
        let mut config = keepalive(10, 60);
        config.close_timeout = None;
        let mut conn = started(Role::Server, config, t0);
        conn.send_close(CloseCode::NORMAL, "").unwrap();
        take_output(&mut conn);
        assert_eq!(
            conn.poll_timeout(t0),
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
            conn.poll_timeout(t0),
            None,
            "nothing waiting, nothing to time"
        );
        conn.send_binary(&[0; 1000]).unwrap();
        // The output started waiting: from the time given next.
        assert_eq!(
            conn.poll_timeout(t0 + 100 * SEC),
            Some(t0 + 100 * SEC + DEFAULT_WRITE_TIMEOUT)
        );
        // The transport takes a little: the clock starts over.
        conn.consume_output(10);
        let stalled_at = t0 + 110 * SEC + DEFAULT_WRITE_TIMEOUT;
        assert_eq!(conn.poll_timeout(t0 + 110 * SEC), Some(stalled_at));
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
            conn.poll_timeout(now);
            now += DEFAULT_WRITE_TIMEOUT / 2;
            take_output(&mut conn);
            assert_eq!(conn.poll_timeout(now), None);
        }
        assert_eq!(conn.handle_timeout(now + DEFAULT_WRITE_TIMEOUT * 2), Ok(()));
        assert_eq!(conn.state(), State::Open);
    }

    #[test]
    fn write_timeout_bounds_a_close_frame_the_peer_never_reads() {
        let t0 = Instant::now();
        let config = Config {
            close_timeout: None,
            ..Config::default()
        };
        let mut conn = started(Role::Server, config, t0);
        conn.send_close(CloseCode::GOING_AWAY, "bye").unwrap();
        assert_eq!(conn.poll_timeout(t0), Some(t0 + DEFAULT_WRITE_TIMEOUT));
        assert_eq!(
            conn.handle_timeout(t0 + DEFAULT_WRITE_TIMEOUT),
            Err(TimeoutError::Write)
        );
        assert!(conn.should_close_transport());
    }

    #[test]
    fn clock_given_late_starts_the_write_clock_for_waiting_output() {
        let t0 = Instant::now();
        let mut conn = server_with(Config::default());
        conn.send_text("queued before any clock").unwrap();
        assert_eq!(conn.poll_timeout(t0), Some(t0 + DEFAULT_WRITE_TIMEOUT));
    }

    #[test]
    fn clock_does_not_go_back() {
        let t0 = Instant::now() + 100 * SEC;
        let mut conn = started(Role::Server, keepalive(10, 60), t0);
        conn.receive_data(&CLIENT_PONG, t0 - 50 * SEC);
        assert_eq!(conn.poll_timeout(t0 - 50 * SEC), Some(t0 + 10 * SEC));
        conn.handle_timeout(t0 + 10 * SEC).unwrap();
        assert_eq!(conn.poll_timeout(t0 + 10 * SEC), Some(t0 + 20 * SEC));
    }

    #[test]
    fn poll_timeout_is_later_than_now_after_handle_timeout() {
        // The adapter loop relies on it: a deadline at or before `now` would spin.
        let t0 = Instant::now();
        let configs = [keepalive(1, 3), keepalive(3, 1), keepalive(1, 1)];
        for config in configs {
            let mut conn = started(Role::Client, config, t0);
            let mut now = t0;
            while let Some(deadline) = conn.poll_timeout(now) {
                assert!(deadline > now, "{deadline:?} <= {now:?}");
                now = deadline;
                let _ = conn.handle_timeout(now);
            }
            assert_eq!(conn.state(), State::Closed);
            assert!(conn.close_timed_out());
        }
    }

    #[test]
    fn close_handshake_without_an_answer_times_out() {
        for role in ROLES {
            let t0 = Instant::now();
            let mut conn = started(role, Config::default(), t0);
            conn.send_close(CloseCode::NORMAL, "").unwrap();
            take_output(&mut conn);
            // Our close went at the time given next: the close timeout counts from there.
            let at = t0 + 2 * SEC;
            assert_eq!(conn.poll_timeout(at), Some(at + DEFAULT_CLOSE_TIMEOUT));
            assert_eq!(conn.handle_timeout(at + 4 * SEC), Ok(()));
            assert!(!conn.close_timed_out());
            assert_eq!(
                conn.handle_timeout(at + DEFAULT_CLOSE_TIMEOUT),
                Err(TimeoutError::Close)
            );
            assert_eq!(conn.ended(), Some(End::TimedOut(TimeoutError::Close)));
            assert!(conn.close_timed_out());
            assert!(conn.should_close_transport());
            assert_eq!(conn.poll_timeout(at + DEFAULT_CLOSE_TIMEOUT), None);
        }
    }

    #[test]
    fn a_client_that_completed_the_close_handshake_ends_cleanly_without_the_servers_eof() {
        let t0 = Instant::now();
        let mut c = started(Role::Client, Config::default(), t0);
        c.receive_data(&to(Role::Client, 0x88, &[0x03, 0xE8]), t0);
        assert_eq!(events(&mut c).len(), 1);
        take_output(&mut c);
        assert!(!c.should_close_transport(), "waiting for the server's EOF");
        let deadline = c.poll_timeout(t0).expect("bounded");
        assert_eq!(deadline, t0 + DEFAULT_CLOSE_TIMEOUT);
        // The server never closes: a clean end all the same, and the transport is closed.
        assert_eq!(c.handle_timeout(deadline), Ok(()));
        assert_eq!(c.ended(), Some(End::Clean));
        assert!(c.should_close_transport() && c.close_timed_out());

        // Not written by then: the handshake did not complete on the wire.
        let mut c = started(Role::Client, Config::default(), t0);
        c.receive_data(&to(Role::Client, 0x88, &[0x03, 0xE8]), t0);
        assert_eq!(events(&mut c).len(), 1);
        c.poll_timeout(t0);
        assert_eq!(
            c.handle_timeout(t0 + DEFAULT_CLOSE_TIMEOUT),
            Err(TimeoutError::Close)
        );
        assert!(c.output().is_empty());
    }

    #[test]
    fn a_failure_outlives_its_close_frame_when_the_close_timeout_passes() {
        let t0 = Instant::now();
        let mut s = started(Role::Server, Config::default(), t0);
        s.receive_data(&[0x81, 0x01, b'x'], t0);
        let err = s.poll_event().unwrap_err();
        assert!(!s.output().is_empty(), "the close frame is queued");
        assert_eq!(s.poll_timeout(t0), Some(t0 + DEFAULT_CLOSE_TIMEOUT));
        assert_eq!(s.handle_timeout(t0 + DEFAULT_CLOSE_TIMEOUT), Ok(()));
        assert!(s.output().is_empty(), "given up on writing it");
        assert_eq!(s.ended(), Some(End::Failed(err)));
        assert!(s.close_timed_out());
    }

    #[test]
    fn close_timeout_can_be_changed_or_turned_off_per_connection() {
        let t0 = Instant::now();
        let mut conn = started(Role::Client, Config::default(), t0);
        conn.set_close_timeout(None);
        conn.send_close(CloseCode::NORMAL, "").unwrap();
        take_output(&mut conn);
        assert_eq!(conn.poll_timeout(t0), None);

        let mut conn = client_with(Config::default());
        // Kept in whole milliseconds, rounded up: never shorter than asked.
        conn.set_close_timeout(Some(Duration::from_nanos(1)));
        conn.send_close(CloseCode::NORMAL, "").unwrap();
        assert_eq!(
            conn.poll_timeout(t0),
            Some(t0 + Duration::from_millis(1)).min(Some(t0 + DEFAULT_WRITE_TIMEOUT))
        );
        // A wait that started keeps its deadline.
        conn.set_close_timeout(Some(SEC));
        assert_eq!(conn.poll_timeout(t0), Some(t0 + Duration::from_millis(1)));
    }

    #[test]
    fn close_timeout_is_kept_in_milliseconds_rounded_up() {
        assert_eq!(millis_up(Some(Duration::ZERO)), 0);
        assert_eq!(millis_up(Some(Duration::from_nanos(1))), 1);
        assert_eq!(millis_up(Some(Duration::from_micros(5_001))), 6);
        assert_eq!(millis_up(Some(DEFAULT_CLOSE_TIMEOUT)), 5_000);
        let longest = Duration::from_millis(u64::from(u32::MAX) - 1);
        assert_eq!(millis_up(Some(longest)), u32::MAX - 1);
        // From `u32::MAX` milliseconds on: no bound.
        assert_eq!(millis_up(Some(longest + Duration::from_nanos(1))), u32::MAX);
        assert_eq!(millis_up(Some(Duration::MAX)), u32::MAX);
        assert_eq!(millis_up(None), u32::MAX);
    }
}
