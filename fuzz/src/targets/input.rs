//! A cursor over the fuzzer's bytes for the structure-aware targets: every read succeeds
//! (missing bytes read as zero), so any byte string is a valid input and small mutations of
//! a seed change one decision at a time.

/// Reads decisions and strings from the input bytes.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Read from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// One byte (0 when the input is used up).
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// A little-endian `u64` from up to 8 bytes.
    pub fn u64(&mut self) -> u64 {
        let mut v = 0u64;
        for i in 0..8 {
            v |= u64::from(self.byte()) << (8 * i);
        }
        v
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }

    /// One of `items`.
    pub fn choose<'b, T>(&mut self, items: &'b [T]) -> &'b T {
        &items[self.below(items.len())]
    }

    /// A length-prefixed byte string (one length byte, at most 255 bytes).
    pub fn bytes(&mut self) -> &'a [u8] {
        let n = usize::from(self.byte()).min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    /// A length-prefixed string, lossily decoded as UTF-8.
    pub fn string(&mut self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }

    /// Bytes up to (not including) the next `\n`, or all that is left.
    pub fn line(&mut self) -> &'a [u8] {
        let end = self
            .data
            .iter()
            .position(|b| *b == b'\n')
            .unwrap_or(self.data.len());
        let (head, rest) = self.data.split_at(end);
        self.data = rest.get(1..).unwrap_or_default();
        head
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}
