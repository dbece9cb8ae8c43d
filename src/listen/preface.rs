//! Knowing when a client has finished the HTTP/2 connection preface: the 24-byte
//! magic and then a SETTINGS frame (RFC 9113 §3.4). hyper validates the preface but
//! does not say when it is done, and has no timeout for it; this wrapper watches
//! the bytes hyper reads, without changing them, and marks the connection begun
//! once the whole preface has gone by. Bytes that are not the magic (HTTP/1 on the
//! HTTP listener) end the watching: there the first request marks it begun.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::activity::Activity;

const MAGIC: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The magic and the 9-byte header of the frame after it.
const HEAD: usize = MAGIC.len() + 9;
const SETTINGS: u8 = 0x4;

/// An IO whose reads are watched for the end of the HTTP/2 preface.
pub(super) struct PrefaceWatch<IO> {
    io: IO,
    activity: Arc<Activity>,
    head: [u8; HEAD],
    /// Bytes read so far while watching; `None` once done watching.
    read: Option<usize>,
}

impl<IO> PrefaceWatch<IO> {
    pub(super) fn new(io: IO, activity: Arc<Activity>) -> Self {
        PrefaceWatch {
            io,
            activity,
            head: [0; HEAD],
            read: Some(0),
        }
    }

    fn saw(&mut self, bytes: &[u8]) {
        let Some(read) = self.read else { return };
        if read < HEAD {
            let copied = bytes.len().min(HEAD - read);
            self.head[read..read + copied].copy_from_slice(&bytes[..copied]);
        }
        let read = read + bytes.len();
        let magic_seen = read.min(MAGIC.len());
        if self.head[..magic_seen] != MAGIC[..magic_seen] {
            self.read = None; // Not HTTP/2 with prior knowledge.
            return;
        }
        if read >= HEAD {
            let length = u32::from_be_bytes([0, self.head[24], self.head[25], self.head[26]]);
            if self.head[27] != SETTINGS {
                self.read = None; // Not a preface: hyper refuses the connection.
                return;
            }
            if read >= HEAD + length as usize {
                self.activity.begin();
                self.read = None;
                return;
            }
        }
        self.read = Some(read);
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for PrefaceWatch<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if self.read.is_some() && matches!(polled, Poll::Ready(Ok(()))) {
            let this = &mut *self;
            this.saw(&buf.filled()[before..]);
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for PrefaceWatch<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preface(settings_len: u8) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[0, 0, settings_len, SETTINGS, 0, 0, 0, 0, 0]);
        bytes.extend(std::iter::repeat_n(0, settings_len.into()));
        bytes
    }

    fn watch(chunks: &[&[u8]]) -> bool {
        let activity = Activity::new();
        let mut watch = PrefaceWatch::new((), activity.clone());
        for chunk in chunks {
            watch.saw(chunk);
        }
        activity.has_begun()
    }

    #[test]
    fn the_whole_preface_begins_the_connection_however_it_is_split() {
        let bytes = preface(12);
        for split in 0..bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert!(watch(&[a, b]), "split at {split}");
        }
        let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
        assert!(watch(&one_by_one));
        assert!(watch(&[&preface(0)]));
    }

    #[test]
    fn part_of_a_preface_or_something_else_does_not() {
        let bytes = preface(12);
        assert!(!watch(&[&bytes[..bytes.len() - 1]]));
        assert!(!watch(&[&bytes[..10]]));
        assert!(!watch(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]));
        let mut ping_first = bytes.clone();
        ping_first[27] = 0x6;
        assert!(!watch(&[&ping_first]));
    }
}
