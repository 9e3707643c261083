//! Limits and switches of a [`Connection`](crate::Connection).

use std::time::Duration;

/// Default limit for one reassembled message: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 20;

/// Default limit for an HTTP request or response head during the opening handshake: 16 KiB.
pub const DEFAULT_MAX_HEAD_SIZE: usize = 16 << 10;

/// Default [`Config::write_timeout`]: 30 s.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Default [`Config::close_timeout`]: 5 s.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Limits and switches for a [`Connection`](crate::Connection).
///
/// ```
/// use std::time::Duration;
///
/// let mut config = gangway_proto::Config::default();
/// config.max_message_size = 1 << 20;
/// // Ping a silent peer every 20 s; give up on it after a minute without a word.
/// config.ping_interval = Some(Duration::from_secs(20));
/// config.idle_timeout = Some(Duration::from_secs(60));
/// ```
///
/// A [`Connection`](crate::Connection) takes a `Config` or an `Arc<Config>`: a server that
/// builds its connections from clones of one `Arc` keeps a single copy for all of them, where a
/// `Config` given by value is moved into a new allocation for each connection.
///
/// # Timers
///
/// The core has no clock. The four timers below run on the time the caller passes in (the `now`
/// of [`Connection::receive_data`](crate::Connection::receive_data),
/// [`Connection::poll_timeout`](crate::Connection::poll_timeout) and
/// [`Connection::handle_timeout`](crate::Connection::handle_timeout)); a connection that is never
/// given the time never fires them. `Some(Duration::ZERO)` means the same as `None`: off, except
/// for `close_timeout`, where zero gives up on the close handshake at the first reading.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Largest payload of a single received frame, in bytes. A frame header that
    /// announces more fails the connection with 1009 before anything is allocated.
    ///
    /// A frame of a compressed message (permessage-deflate) may be larger by an eighth plus
    /// 64 bytes (`max_frame_size + max_frame_size / 8 + 64`): DEFLATE grows data it cannot
    /// compress by up to a bit per byte and its block headers, and a message within
    /// `max_message_size` must not be refused for its compressed frame. Such a frame is
    /// inflated as it arrives, never stored, and what it inflates to counts against
    /// `max_message_size`.
    pub max_frame_size: usize,
    /// Largest reassembled received message, in bytes. A message that grows
    /// past it fails the connection with 1009 (RFC 6455 §10.4).
    pub max_message_size: usize,
    /// Deliver data messages as they arrive, piece by piece ([`Event::Fragment`]), instead of
    /// reassembled ([`Event::Text`], [`Event::Binary`]). Off by default.
    ///
    /// Nothing of a message is kept between pieces but a split UTF-8 code point (at most 3
    /// bytes), so a connection can receive messages of any size in the memory of one read.
    /// Text is still validated as it arrives, and the connection fails (1007) as soon as it
    /// cannot be UTF-8 (RFC 6455 §8.1); pieces before the fault were already delivered, so a
    /// consumer of text must be ready to discard a message that ends in an error.
    /// `max_frame_size` and `max_message_size` still apply (they count the whole message, not
    /// the piece): raise them for large messages.
    ///
    /// With permessage-deflate, each piece is inflated as it arrives. Deflate expands at most
    /// about 1032 times, so one read of `n` compressed bytes yields at most about `1032 × n` bytes
    /// of pieces before the next read; a reader that reads in small chunks keeps that small.
    ///
    /// [`Event::Fragment`]: crate::Event::Fragment
    /// [`Event::Text`]: crate::Event::Text
    /// [`Event::Binary`]: crate::Event::Binary
    pub deliver_fragments: bool,
    /// Largest outgoing frame payload; longer messages are split into fragments.
    /// `usize::MAX` (the default) sends every message as one frame.
    pub max_send_frame_size: usize,
    /// Keepalive: after this long without receiving anything, send a ping, and another after
    /// each further interval of silence. The peer must answer with a pong (RFC 6455 §5.5.2), and
    /// any byte received ends the silence. `None` (the default): no automatic pings.
    pub ping_interval: Option<Duration>,
    /// Dead peer detection: after this long without receiving anything, not even a pong, the
    /// connection is closed abnormally, without a close frame
    /// ([`TimeoutError::Idle`](crate::TimeoutError::Idle)). Make it longer than
    /// `ping_interval` so that a live peer has time to answer a ping. `None` (the default): never.
    pub idle_timeout: Option<Duration>,
    /// Peer that never reads: when output has waited this long without the transport taking any
    /// of it, the connection is closed abnormally and the output dropped
    /// ([`TimeoutError::Write`](crate::TimeoutError::Write)). Default
    /// [`DEFAULT_WRITE_TIMEOUT`]; `None`: never.
    pub write_timeout: Option<Duration>,
    /// How long the close handshake may take once the connection stopped being open (our close
    /// sent, the peer's received, or the connection failed): writing the close frames, and for
    /// a client, waiting for the server to close the transport (RFC 6455 §7.1.1). Past it the
    /// transport is given up on ([`TimeoutError::Close`](crate::TimeoutError::Close)). Default
    /// [`DEFAULT_CLOSE_TIMEOUT`]; `None`: never. A connection can change it with
    /// [`Connection::set_close_timeout`](crate::Connection::set_close_timeout).
    pub close_timeout: Option<Duration>,
    /// permessage-deflate (RFC 7692, feature `deflate`): whether the opening handshake offers
    /// (client) or accepts (server) it, with which parameters, and how messages are compressed
    /// once it is in use. Off by default
    /// ([`DeflateConfig::disabled`](crate::extensions::permessage_deflate::DeflateConfig::disabled)):
    /// compression costs CPU, and compressing secrets together with data an attacker chooses can
    /// leak them through the compressed size. Turn it on with a `DeflateConfig`; what each
    /// choice costs per connection (from nothing to about 420 KiB) is in
    /// [the extension's docs](crate::extensions::permessage_deflate#memory-per-connection). A
    /// server with many connections wants
    /// [`DeflateConfig::bounded_client_window`](crate::extensions::permessage_deflate::DeflateConfig::bounded_client_window)
    /// (`gangway serve`'s default) or
    /// [`DeflateConfig::no_context_takeover`](crate::extensions::permessage_deflate::DeflateConfig::no_context_takeover).
    #[cfg(feature = "deflate")]
    pub deflate: crate::extensions::permessage_deflate::DeflateConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_send_frame_size: usize::MAX,
            deliver_fragments: false,
            ping_interval: None,
            idle_timeout: None,
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
            close_timeout: Some(DEFAULT_CLOSE_TIMEOUT),
            #[cfg(feature = "deflate")]
            deflate: crate::extensions::permessage_deflate::DeflateConfig::disabled(),
        }
    }
}
