//! The bus's errors.

use std::fmt;

/// Why a bus could not be set up.
#[derive(Debug)]
#[non_exhaustive]
pub enum BusError {
    /// The settings do not fit together (what is wrong).
    Config(&'static str),
    /// The engine could not be reached, or refused (its error is the source).
    Engine(Box<dyn std::error::Error + Send + Sync>),
}

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BusError::Config(what) => write!(f, "bad bus settings: {what}"),
            BusError::Engine(_) => f.write_str("cannot connect to the engine"),
        }
    }
}

impl std::error::Error for BusError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BusError::Config(_) => None,
            BusError::Engine(e) => Some(&**e),
        }
    }
}

/// Why a publish was refused (see [`Bus::publish`](crate::Bus::publish)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// The message is larger than the bus accepts.
    TooLarge {
        /// Its size in bytes.
        size: usize,
        /// The largest accepted.
        max: usize,
    },
    /// The engine queue is full.
    QueueFull,
    /// The bus is shutting down.
    Closed,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::TooLarge { size, max } => {
                write!(
                    f,
                    "message of {size} bytes is larger than the bus accepts ({max})"
                )
            }
            PublishError::QueueFull => f.write_str("the engine queue is full"),
            PublishError::Closed => f.write_str("the bus is closed"),
        }
    }
}

impl std::error::Error for PublishError {}

/// Why missed messages could not be delivered (see [`Bus::recover`](crate::Bus::recover)).
#[derive(Debug)]
#[non_exhaustive]
pub enum RecoverError {
    /// The position is of another epoch, ahead of the room, or older than the history keeps:
    /// the client must start again from the room's current position.
    Unrecoverable,
    /// History is off.
    NoHistory,
    /// The engine could not be asked (its error is the source).
    Engine(Box<dyn std::error::Error + Send + Sync>),
}

impl fmt::Display for RecoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoverError::Unrecoverable => f.write_str("the position cannot be recovered"),
            RecoverError::NoHistory => f.write_str("history is off"),
            RecoverError::Engine(_) => f.write_str("cannot read the history"),
        }
    }
}

impl std::error::Error for RecoverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RecoverError::Engine(e) => Some(&**e),
            _ => None,
        }
    }
}
