//! The injected source of randomness for masking keys and handshake nonces.

/// A source of cryptographically secure random bytes.
///
/// The core never reaches for randomness on its own: masking keys (RFC 6455
/// §5.3) and `Sec-WebSocket-Key` nonces (§4.1) come from here, so tests and
/// fuzzing can be deterministic.
pub trait RandomSource: Send {
    /// Fill `dest` with random bytes.
    fn fill(&mut self, dest: &mut [u8]);
}

/// The operating system's CSPRNG (`getrandom`), read in blocks of 256 bytes so
/// that masking a small frame does not cost a system call.
pub struct OsRandom {
    buf: [u8; 256],
    pos: usize,
}

impl OsRandom {
    /// A new source; nothing is read from the OS until it is first used.
    pub fn new() -> Self {
        OsRandom {
            buf: [0; 256],
            pos: 256,
        }
    }
}

impl Default for OsRandom {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for OsRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OsRandom")
    }
}

impl RandomSource for OsRandom {
    /// # Panics
    ///
    /// Panics if the operating system cannot provide random bytes; there is no
    /// secure way to go on without them.
    fn fill(&mut self, dest: &mut [u8]) {
        let mut dest = dest;
        while !dest.is_empty() {
            if self.pos == self.buf.len() {
                // Invariant: a failing OS CSPRNG leaves no safe fallback.
                getrandom::fill(&mut self.buf).expect("operating system random source failed");
                self.pos = 0;
            }
            let n = dest.len().min(self.buf.len() - self.pos);
            dest[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            // Never hand out the same bytes twice.
            self.buf[self.pos..self.pos + n].fill(0);
            self.pos += n;
            dest = &mut dest[n..];
        }
    }
}

/// A deterministic source for tests and fuzzing: an xorshift sequence from a seed.
/// Never use it on a real connection.
#[derive(Clone, Debug)]
pub struct SeededRandom(u64);

impl SeededRandom {
    /// A sequence that starts from `seed` (0 is replaced by a fixed non-zero value).
    pub fn new(seed: u64) -> Self {
        SeededRandom(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }
}

impl RandomSource for SeededRandom {
    fn fill(&mut self, dest: &mut [u8]) {
        for b in dest {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_random_differs_between_calls() {
        let mut r = OsRandom::new();
        let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
        r.fill(&mut a);
        r.fill(&mut b);
        assert_ne!(a, b);
        let mut big = [0u8; 1000];
        r.fill(&mut big);
        assert!(big.iter().any(|&x| x != 0));
    }
}
