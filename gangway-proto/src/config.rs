//! Limits and switches of a [`Connection`](crate::Connection).

/// Default limit for one reassembled message: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 20;

/// Default limit for an HTTP request or response head during the opening handshake: 16 KiB.
pub const DEFAULT_MAX_HEAD_SIZE: usize = 16 << 10;

/// Limits and switches for a [`Connection`](crate::Connection).
///
/// ```
/// let mut config = gangway_proto::Config::default();
/// config.max_message_size = 1 << 20;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Largest payload of a single received frame, in bytes. A frame header that
    /// announces more fails the connection with 1009 before anything is allocated.
    pub max_frame_size: usize,
    /// Largest reassembled received message, in bytes. A message that grows
    /// past it fails the connection with 1009 (RFC 6455 §10.4).
    pub max_message_size: usize,
    /// Largest outgoing frame payload; longer messages are split into fragments.
    /// `usize::MAX` (the default) sends every message as one frame.
    pub max_send_frame_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_send_frame_size: usize::MAX,
        }
    }
}
