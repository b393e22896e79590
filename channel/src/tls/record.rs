//! Follows TLS record boundaries in the incoming byte stream, so that an end
//! of file can be told apart: between records (a missing close_notify,
//! maybe harmless) or inside one (always a truncated stream). rustls does
//! not say which.

/// Length of a TLS record header (type, version, length).
const HEADER: usize = 5;

/// Where the stream stands relative to record boundaries.
#[derive(Debug, Default, Clone)]
pub(crate) struct RecordTracker {
    header: [u8; HEADER],
    header_len: usize,
    body_left: usize,
}

impl RecordTracker {
    /// Account for `bytes` that arrived, in order.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (HEADER - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len == HEADER {
                self.body_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                self.header_len = 0;
            }
        }
    }

    /// Bytes still missing from the current record, if the stream stands
    /// inside one (a partial header counts as inside).
    pub(crate) fn missing(&self) -> Option<usize> {
        if self.header_len > 0 {
            Some(HEADER - self.header_len)
        } else if self.body_left > 0 {
            Some(self.body_left)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_records_end_on_a_boundary() {
        let mut t = RecordTracker::default();
        let rec = [23u8, 3, 3, 0, 3, 1, 2, 3];
        for b in rec.iter().chain(rec.iter()) {
            t.feed(std::slice::from_ref(b));
        }
        assert_eq!(t.missing(), None);
    }

    #[test]
    fn partial_header_and_body_are_inside() {
        let mut t = RecordTracker::default();
        t.feed(&[23, 3]);
        assert_eq!(t.missing(), Some(3));
        t.feed(&[3, 0, 4, 9]);
        assert_eq!(t.missing(), Some(3));
    }
}
