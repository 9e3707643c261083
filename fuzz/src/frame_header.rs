//! Frame header decode (RFC 6455 §5.2) against its own encoder.

use gangway_proto::frame::{FrameHeader, MAX_HEADER_LEN};
use gangway_proto::ProtocolError;

/// `FrameHeader::decode` on arbitrary bytes.
///
/// Oracle: the only errors are a reserved opcode and a 64-bit length with its top bit set; a
/// decoded header re-encodes (in the minimal length form, so possibly shorter) to bytes that
/// decode to the same fields; the decision does not change with more bytes, and every shorter
/// prefix of a complete header is partial.
pub fn check(data: &[u8]) {
    let result = FrameHeader::decode(data);
    // More bytes never change a decision.
    if !matches!(result, Ok(None)) {
        let mut longer = data.to_vec();
        longer.extend_from_slice(&[0xFF; MAX_HEADER_LEN]);
        assert_eq!(
            FrameHeader::decode(&longer),
            result,
            "more bytes changed it"
        );
    }
    match result {
        Ok(None) => assert!(
            data.len() < MAX_HEADER_LEN,
            "partial with {} bytes",
            data.len()
        ),
        Err(ProtocolError::ReservedOpcode(op)) => {
            assert!(matches!(op, 3..=7 | 11..=15), "opcode {op}");
            assert_eq!(data[0] & 0x0F, op);
        }
        Err(ProtocolError::InvalidLength) => {
            assert_eq!(data[1] & 0x7F, 127);
            assert!(data[2] & 0x80 != 0);
        }
        Err(err) => panic!("undocumented decode error {err:?}"),
        Ok(Some((header, len))) => {
            assert!(
                (2..=MAX_HEADER_LEN).contains(&len) && len <= data.len(),
                "length {len}"
            );
            assert!(header.rsv <= 0b111);
            assert!(
                header.payload_len >> 63 == 0,
                "length {}",
                header.payload_len
            );
            let extended = match data[1] & 0x7F {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let mask = if header.mask.is_some() { 4 } else { 0 };
            assert_eq!(len, 2 + extended + mask);
            for cut in 0..len {
                assert_eq!(FrameHeader::decode(&data[..cut]), Ok(None), "prefix {cut}");
            }

            let mut out = [0u8; MAX_HEADER_LEN];
            let n = header.encode(&mut out);
            assert_eq!(n, header.encoded_len());
            assert!(n <= len, "re-encoded {n} > decoded {len}");
            if n == len {
                assert_eq!(&out[..n], &data[..len], "same length form, different bytes");
            }
            assert_eq!(FrameHeader::decode(&out[..n]), Ok(Some((header, n))));
        }
    }
}
