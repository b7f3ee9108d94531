//! Server-sent events as the gateway relays them: split into whole events,
//! each kept as the bytes that came (ids, retry fields, comments and
//! priming events pass unchanged), and the data of one read when it may be
//! the answer the gateway watches for.

use bytes::{Bytes, BytesMut};

/// Collects a stream's bytes and hands out whole events. What was scanned
/// is not scanned again when more arrives (an event that comes in many
/// small chunks costs its length, not its length times its chunks).
#[derive(Default)]
pub struct Splitter {
    buf: BytesMut,
    /// Where the scan goes on, and where the line it is in began.
    pos: usize,
    line_start: usize,
}

/// The most bytes an event may hold before the gateway gives up on it.
pub const MAX_EVENT: usize = 16 * 1024 * 1024;

impl Splitter {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes held that make no whole event yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next whole event with its blank line, if one has arrived.
    pub fn next_event(&mut self) -> Option<Bytes> {
        let end = self.scan()?;
        self.pos = 0;
        self.line_start = 0;
        Some(self.buf.split_to(end).freeze())
    }

    /// What is left when the stream ends (an event cut short).
    pub fn rest(&mut self) -> Bytes {
        self.pos = 0;
        self.line_start = 0;
        self.buf.split().freeze()
    }

    /// Where the first event ends (after the empty line that ends it):
    /// lines end in CRLF, LF or CR; a CR last in the buffer waits for what
    /// follows.
    fn scan(&mut self) -> Option<usize> {
        let buf = &self.buf;
        let mut i = self.pos;
        while i < buf.len() {
            let b = buf[i];
            if b == b'\n' || b == b'\r' {
                let mut end = i + 1;
                if b == b'\r' {
                    match buf.get(end) {
                        Some(b'\n') => end += 1,
                        Some(_) => {}
                        None => {
                            self.pos = i;
                            return None;
                        }
                    }
                }
                if i == self.line_start {
                    return Some(end);
                }
                self.line_start = end;
                i = end;
            } else {
                i += 1;
            }
        }
        self.pos = i;
        None
    }
}

/// The lines of an event without their endings.
fn lines(event: &[u8]) -> impl Iterator<Item = &[u8]> {
    event
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .flat_map(|l| l.split(|b| *b == b'\r'))
}

/// An event's data: its `data` lines joined by LF (`None` when it has none).
pub fn data(event: &[u8]) -> Option<String> {
    let mut out: Option<String> = None;
    for line in lines(event) {
        let Some(v) = line.strip_prefix(b"data") else {
            continue;
        };
        let v = match v.first() {
            None => &b""[..],
            Some(b':') => v[1..].strip_prefix(b" ").unwrap_or(&v[1..]),
            Some(_) => continue,
        };
        let v = String::from_utf8_lossy(v);
        match &mut out {
            Some(s) => {
                s.push('\n');
                s.push_str(&v);
            }
            None => out = Some(v.into_owned()),
        }
    }
    out
}

/// The event with its data replaced by `new_data` (on one line), its other
/// fields (`id`, `event`, `retry`) kept.
pub fn with_data(event: &[u8], new_data: &str) -> Bytes {
    let mut out = Vec::with_capacity(new_data.len() + 64);
    for line in lines(event) {
        if line.is_empty() || line.starts_with(b"data") {
            continue;
        }
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(new_data.as_bytes());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// A `message` event of Tollgate's own.
pub fn message(data: &str) -> Bytes {
    Bytes::from(format!("event: message\ndata: {data}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_on_any_line_ending_and_wait_for_the_rest() {
        let mut s = Splitter::default();
        s.push(b"id: 1\r\ndata: {\"a\":1}\r\n\r\n: comment\n\nretry: 5\r");
        assert_eq!(
            &s.next_event().unwrap()[..],
            b"id: 1\r\ndata: {\"a\":1}\r\n\r\n"
        );
        assert_eq!(&s.next_event().unwrap()[..], b": comment\n\n");
        assert!(s.next_event().is_none(), "a CR last may be half of CRLF");
        s.push(b"\r");
        assert!(
            s.next_event().is_none(),
            "nor does a CR that ends the blank line"
        );
        s.push(b"data: y\n\n");
        assert_eq!(&s.next_event().unwrap()[..], b"retry: 5\r\r");
        assert_eq!(&s.next_event().unwrap()[..], b"data: y\n\n");
        s.push(b"data: x");
        assert!(s.next_event().is_none());
        assert_eq!(&s.rest()[..], b"data: x");
    }

    #[test]
    fn data_lines_join_and_fields_survive_a_rewrite() {
        let e = b"event: message\nid: 7\ndata: {\"a\":\ndata:1}\n\n";
        assert_eq!(data(e).unwrap(), "{\"a\":\n1}");
        assert_eq!(data(b": ping\n\n"), None);
        assert_eq!(data(b"database: x\n\n"), None, "only the field named data");
        let r = with_data(e, "{\"b\":2}");
        assert_eq!(&r[..], b"event: message\nid: 7\ndata: {\"b\":2}\n\n");
    }
}
