//! Frames (RFC 6455 §5): opcodes, headers, masking, close payloads.

mod close;
mod header;
pub mod mask;
mod opcode;

pub use close::{CloseCode, CloseFrame};
pub use header::{FrameHeader, MAX_HEADER_LEN};
pub use opcode::OpCode;
