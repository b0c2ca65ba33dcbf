//! A first-in first-out byte buffer for the session's traffic.
//!
//! Bytes are appended at the end, read into the free space there directly (no bounce
//! buffer), and consumed from the front by moving an offset: what is left after a
//! partial write is never shifted, except to reclaim the front when the end runs out
//! of room and the front has more free space than there is content to move.

use labssh_helper_proto::wire;

/// See the module documentation.
#[derive(Default)]
pub struct Buffer {
    /// Storage; `data[start..end]` is the content, `data[end..]` free space that was
    /// initialised once, when the buffer grew.
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buffer {
    /// Bytes held.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// The content.
    pub fn as_slice(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// Drops `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.len(), "consuming more than the buffer holds");
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// At least `n` bytes of free space after the content, to fill and then
    /// [`commit`](Self::commit).
    pub fn spare(&mut self, n: usize) -> &mut [u8] {
        if self.data.len() - self.end < n {
            let len = self.len();
            // Move the content to the front only when the space freed there is at
            // least as large as what moves (so each byte is moved O(1) times), else grow.
            if self.start >= len && self.data.len() - len >= n {
                self.data.copy_within(self.start..self.end, 0);
                self.start = 0;
                self.end = len;
            } else {
                let size = (self.end + n).max(self.data.len() * 2);
                self.data.resize(size, 0);
            }
        }
        &mut self.data[self.end..]
    }

    /// Appends the first `n` bytes of [`spare`](Self::spare).
    pub fn commit(&mut self, n: usize) {
        assert!(
            self.end + n <= self.data.len(),
            "committing beyond the spare space"
        );
        self.end += n;
    }

    /// Appends a copy of `bytes`.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.spare(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.commit(bytes.len());
    }

    /// Gives the storage back when nothing is held: a session that has gone quiet
    /// costs no buffer (the next read grows it again). Returns whether it did.
    pub fn release_if_empty(&mut self) -> bool {
        if !self.is_empty() || self.data.capacity() == 0 {
            return false;
        }
        *self = Buffer::default();
        true
    }

    /// Appends one frame.
    pub fn put_frame(&mut self, kind: u8, payload: &[u8]) {
        self.extend(&wire::frame_header(kind, payload.len()));
        self.extend(payload);
    }
}

impl From<Vec<u8>> for Buffer {
    fn from(data: Vec<u8>) -> Buffer {
        let end = data.len();
        Buffer {
            data,
            start: 0,
            end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_buffer_gives_its_storage_back_and_a_full_one_keeps_it() {
        let mut b = Buffer::default();
        assert!(!b.release_if_empty(), "nothing to give back");
        b.extend(&[1; 1000]);
        assert!(!b.release_if_empty(), "it holds bytes");
        assert_eq!(b.as_slice(), &[1; 1000][..]);
        b.consume(1000);
        assert!(b.release_if_empty());
        assert_eq!(b.data.capacity(), 0);
        // And it grows again on demand.
        b.extend(b"again");
        assert_eq!(b.as_slice(), b"again");
    }

    #[test]
    fn bytes_come_out_in_order_across_partial_consumes_and_growth() {
        let mut buf = Buffer::default();
        let mut expected = std::collections::VecDeque::new();
        let mut next = 0u8;
        for round in 0..200usize {
            let n = (round * 37) % 5000;
            let chunk: Vec<u8> = (0..n)
                .map(|_| {
                    next = next.wrapping_add(1);
                    next
                })
                .collect();
            buf.extend(&chunk);
            expected.extend(chunk);
            let take = (round * 53) % (buf.len() + 1);
            let got: Vec<u8> = buf.as_slice()[..take].to_vec();
            let want: Vec<u8> = expected.drain(..take).collect();
            assert_eq!(got, want);
            buf.consume(take);
            assert_eq!(buf.len(), expected.len());
        }
        assert_eq!(buf.as_slice(), expected.make_contiguous());
    }

    #[test]
    fn spare_space_is_filled_in_place() {
        let mut buf = Buffer::from(b"ab".to_vec());
        let spare = buf.spare(3);
        spare[..3].copy_from_slice(b"cde");
        buf.commit(2);
        assert_eq!(buf.as_slice(), b"abcd");
        buf.consume(4);
        assert!(buf.is_empty());
        buf.put_frame(wire::kind::STDOUT, b"xy");
        assert_eq!(
            buf.as_slice(),
            [&3u32.to_be_bytes()[..], &[wire::kind::STDOUT], b"xy"].concat()
        );
    }
}
