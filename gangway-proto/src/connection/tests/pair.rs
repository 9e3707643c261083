//! The in-memory harness: endpoints with seeded randomness, a fixed clock, input fed copied
//! ([`Connection::receive_data`]) or lent ([`Connection::receive_buf`]), events drained until
//! the input holds no more (or the connection fails), and [`Pair`], a client and a server
//! whose output is moved to each other.

use std::sync::OnceLock;
use std::time::Instant;

use bytes::BytesMut;
pub(crate) use gangway_test_support::{close_payload, raw, WireFrame, KEY};

use crate::config::Config;
use crate::connection::Connection;
use crate::error::ProtocolError;
use crate::frame::CloseFrame;
use crate::message::Event;
use crate::random::SeededRandom;
use crate::role::Role;

/// Both roles, for tests that hold for each.
pub(crate) const ROLES: [Role; 2] = [Role::Client, Role::Server];

/// The time the tests without timers give: one fixed reading.
pub(crate) fn now() -> Instant {
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

/// A client with seeded randomness and `config`.
pub(crate) fn client_with(config: Config) -> Connection {
    Connection::with_random(Role::Client, config, Box::new(SeededRandom::new(7)))
}

/// A server with `config`.
pub(crate) fn server_with(config: Config) -> Connection {
    Connection::with_random(Role::Server, config, Box::new(SeededRandom::new(11)))
}

/// A client with the default configuration.
pub(crate) fn client() -> Connection {
    client_with(Config::default())
}

/// A server with the default configuration.
pub(crate) fn server() -> Connection {
    server_with(Config::default())
}

/// An endpoint of `role` with `config`.
pub(crate) fn endpoint_with(role: Role, config: Config) -> Connection {
    match role {
        Role::Client => client_with(config),
        Role::Server => server_with(config),
    }
}

/// An endpoint of `role` with the default configuration.
pub(crate) fn endpoint(role: Role) -> Connection {
    endpoint_with(role, Config::default())
}

/// The other role.
pub(crate) fn peer_of(role: Role) -> Role {
    match role {
        Role::Client => Role::Server,
        Role::Server => Role::Client,
    }
}

/// A frame a well-behaved peer of `receiver` would send: masked towards a server only.
pub(crate) fn to(receiver: Role, first: u8, payload: &[u8]) -> Vec<u8> {
    raw(first, payload, (receiver == Role::Server).then_some(KEY))
}

/// How input is fed: borrowed ([`Connection::receive_data`]) or handed over
/// ([`Connection::receive_buf`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Feed {
    Copied,
    Lent,
}

/// Feed `data` to `conn` the way `how` says.
pub(crate) fn feed_by(conn: &mut Connection, data: &[u8], how: Feed) {
    match how {
        Feed::Copied => conn.receive_data(data, now()),
        Feed::Lent => conn.receive_buf(BytesMut::from(data), now()),
    }
}

/// Feed `data` to `conn`, copied.
pub(crate) fn feed(conn: &mut Connection, data: &[u8]) {
    conn.receive_data(data, now());
}

/// Every event the input holds, and how the draining ended: `Ok` when no whole event is left,
/// the error that failed the connection otherwise.
pub(crate) fn drain(conn: &mut Connection) -> (Vec<Event>, Result<(), ProtocolError>) {
    let mut events = Vec::new();
    loop {
        match conn.poll_event() {
            Ok(Some(event)) => events.push(event),
            Ok(None) => return (events, Ok(())),
            Err(err) => return (events, Err(err)),
        }
    }
}

/// Every event the input holds; the connection must not fail.
pub(crate) fn events(conn: &mut Connection) -> Vec<Event> {
    match drain(conn) {
        (events, Ok(())) => events,
        (events, Err(err)) => panic!("failed with {err:?} after {events:?}"),
    }
}

/// Everything `conn` wants to write (every part), marked as written.
pub(crate) fn take_output(conn: &mut Connection) -> Vec<u8> {
    let mut bytes = Vec::new();
    while !conn.output().is_empty() {
        let part = conn.output().to_vec();
        conn.consume_output(part.len());
        bytes.extend(part);
    }
    bytes
}

/// Move everything `from` wants to write into `to`, in one piece, and drain `to`'s events.
pub(crate) fn pump(
    from: &mut Connection,
    to: &mut Connection,
) -> (Vec<Event>, Result<(), ProtocolError>) {
    let bytes = take_output(from);
    feed(to, &bytes);
    drain(to)
}

/// Every frame in `bytes`, which must hold whole frames only.
pub(crate) fn frames(bytes: &[u8]) -> Vec<WireFrame> {
    gangway_test_support::parse_frames(bytes)
}

/// The close frame in `bytes` (which must be the last frame): `Some(None)` for an empty one.
pub(crate) fn close_in(bytes: &[u8]) -> Option<Option<CloseFrame>> {
    let all = frames(bytes);
    let position = all.iter().position(|f| f.opcode == 0x8)?;
    assert_eq!(position, all.len() - 1, "frames after the close frame");
    Some(CloseFrame::parse(&all[position].payload).unwrap())
}

/// The status code of the close frame waiting in `conn`'s output.
pub(crate) fn queued_close_code(conn: &Connection) -> Option<u16> {
    close_in(conn.output())?.map(|c| c.code.0)
}

/// Feed `bytes` to a fresh endpoint and expect it to fail with `err` and queue `code` once the
/// events before the violation are handed out.
pub(crate) fn assert_fails(role: Role, bytes: &[u8], err: ProtocolError, code: u16) {
    for how in [Feed::Copied, Feed::Lent] {
        let mut conn = endpoint(role);
        feed_by(&mut conn, bytes, how);
        assert_eq!(drain(&mut conn).1, Err(err), "{role:?} {how:?}");
        assert_eq!(queued_close_code(&conn), Some(code), "{role:?}");
        assert_eq!(conn.state(), crate::State::Closed);
        assert!(conn.should_close_transport());
        assert_eq!(conn.ended(), Some(crate::End::Failed(err)));
    }
}

/// A client and a server after the opening handshake, in memory.
pub(crate) struct Pair {
    pub(crate) client: Connection,
    pub(crate) server: Connection,
}

impl Pair {
    /// Both with the default configuration.
    pub(crate) fn new() -> Pair {
        Pair::of(client(), server())
    }

    /// These two endpoints.
    pub(crate) fn of(client: Connection, server: Connection) -> Pair {
        Pair { client, server }
    }

    /// Move the client's output to the server; the server's events.
    pub(crate) fn deliver_to_server(&mut self) -> Vec<Event> {
        match pump(&mut self.client, &mut self.server) {
            (events, Ok(())) => events,
            (events, Err(err)) => panic!("server failed with {err:?} after {events:?}"),
        }
    }

    /// Move the server's output to the client; the client's events.
    pub(crate) fn deliver_to_client(&mut self) -> Vec<Event> {
        match pump(&mut self.server, &mut self.client) {
            (events, Ok(())) => events,
            (events, Err(err)) => panic!("client failed with {err:?} after {events:?}"),
        }
    }
}
