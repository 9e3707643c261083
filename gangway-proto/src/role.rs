//! Which end of the connection we are.

/// The role of an endpoint, which decides masking (RFC 6455 §5.1, §5.3).
///
/// A client masks every frame it sends and rejects masked frames; a server
/// rejects unmasked frames and never masks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The endpoint that sent the opening handshake request.
    Client,
    /// The endpoint that answered it.
    Server,
}

impl Role {
    /// Whether frames this role sends must be masked.
    pub fn masks_outgoing(self) -> bool {
        self == Role::Client
    }
}
