//! A byte cap on each message the server sends, enforced on the wire before the driver sees it.
//!
//! tokio-postgres reserves a buffer for a whole backend message as soon as it has read the
//! message's header, so one 1 GB value would be buffered (and copied) in full before the
//! capability could count a byte of it. [`CappedStream`] sits between the socket (or the TLS
//! session) and the driver, follows the message framing (type byte, then a big-endian i32 length
//! that counts itself), and fails the read with [`MessageTooLarge`] as soon as a header announces
//! a message over the cap, so no buffer larger than the cap is ever allocated. The connection is
//! then dead and is never reused.
//!
//! The cap is per connection and set before each query from the plugin's `max_host_call_bytes`
//! (plus [`MESSAGE_HEADROOM`]): no single row can fit the per-call limit when its message does
//! not. It must never be read from anything the server or a plugin controls.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Threat: a message (row description of 1600 columns, a long error) legitimately a little over
/// the per-call limit failing the connection; the framing of a row adds 4 bytes per column.
pub const MESSAGE_HEADROOM: usize = 1 << 20;

/// Threat: a server sending a huge message before any query set a cap (startup, listing the
/// databases): those messages are small.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 << 20;

/// A backend message longer than the cap, as reported to the capability.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the server sent a message of {size} bytes, over the {cap}-byte limit for one message (the per-call limit plus headroom); the connection was closed before reading it"
)]
pub struct MessageTooLarge {
    pub size: usize,
    pub cap: usize,
}

/// The cap of one connection, shared by its stream and its handle.
#[derive(Debug)]
pub struct MessageCap {
    cap: AtomicUsize,
    /// The size of the message that broke the cap, 0 while none has.
    exceeded: AtomicUsize,
}

impl MessageCap {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap: AtomicUsize::new(cap),
            exceeded: AtomicUsize::new(0),
        })
    }

    /// Sets the largest message allowed from now on.
    pub fn set(&self, cap: usize) {
        self.cap.store(cap, Ordering::Relaxed);
    }

    /// The message that broke the cap, if one did.
    pub fn exceeded(&self) -> Option<MessageTooLarge> {
        match self.exceeded.load(Ordering::Relaxed) {
            0 => None,
            size => Some(MessageTooLarge {
                size,
                cap: self.cap.load(Ordering::Relaxed),
            }),
        }
    }
}

/// A stream of backend messages whose lengths are checked against a [`MessageCap`].
pub struct CappedStream<S> {
    inner: S,
    cap: Arc<MessageCap>,
    /// The header bytes of the next message read so far.
    header: [u8; 5],
    header_len: usize,
    /// Bytes of the current message's body still to come.
    body_left: usize,
}

impl<S> CappedStream<S> {
    pub fn new(inner: S, cap: Arc<MessageCap>) -> Self {
        Self {
            inner,
            cap,
            header: [0; 5],
            header_len: 0,
            body_left: 0,
        }
    }

    /// Follows the framing over `bytes` (just read), failing at the first header over the cap.
    fn scan(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let skip = self.body_left.min(bytes.len());
                self.body_left -= skip;
                bytes = &bytes[skip..];
                continue;
            }
            let take = (5 - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&bytes[..take]);
            self.header_len += take;
            bytes = &bytes[take..];
            if self.header_len < 5 {
                break;
            }
            self.header_len = 0;
            let length = i32::from_be_bytes([
                self.header[1],
                self.header[2],
                self.header[3],
                self.header[4],
            ]);
            let Some(body) = usize::try_from(length).ok().and_then(|l| l.checked_sub(4)) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the server sent an invalid message length {length}"),
                ));
            };
            let size = body + 5;
            let cap = self.cap.cap.load(Ordering::Relaxed);
            if size > cap {
                self.cap.exceeded.store(size, Ordering::Relaxed);
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    MessageTooLarge { size, cap },
                ));
            }
            self.body_left = body;
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CappedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let result = this.scan(&buf.filled()[before..]);
        if result.is_err() {
            // The driver never sees the header that announced the oversized message.
            buf.set_filled(before);
        }
        Poll::Ready(result)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CappedStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    fn message(kind: u8, body: usize) -> Vec<u8> {
        let mut bytes = vec![kind];
        bytes.extend_from_slice(&i32::try_from(body + 4).unwrap().to_be_bytes());
        bytes.extend(std::iter::repeat_n(b'x', body));
        bytes
    }

    /// Reads everything through a capped stream, `chunk` bytes per read of the underlying stream.
    async fn read_all(
        wire: Vec<u8>,
        cap: usize,
        chunk: usize,
    ) -> (io::Result<Vec<u8>>, Arc<MessageCap>) {
        let (mut writer, reader) = tokio::io::duplex(chunk);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = writer.write_all(&wire).await;
        });
        let shared = MessageCap::new(cap);
        let mut stream = CappedStream::new(reader, shared.clone());
        let mut out = Vec::new();
        let result = stream.read_to_end(&mut out).await.map(|_| out);
        (result, shared)
    }

    #[tokio::test]
    async fn messages_up_to_the_cap_pass_whatever_the_read_sizes() {
        let mut wire = message(b'T', 100);
        wire.extend(message(b'D', 995));
        wire.extend(message(b'C', 0));
        for chunk in [1, 3, 5, 7, 64, 4096] {
            let (result, cap) = read_all(wire.clone(), 1000, chunk).await;
            assert_eq!(result.unwrap(), wire, "chunk {chunk}");
            assert_eq!(cap.exceeded(), None);
        }
    }

    #[tokio::test]
    async fn a_header_over_the_cap_fails_before_its_body_is_read() {
        // Only the header of the big message is on the wire: the read must fail on it alone.
        let mut wire = message(b'D', 10);
        wire.extend(&message(b'D', 1 << 30)[..5]);
        for chunk in [1, 2, 5, 4096] {
            let (result, cap) = read_all(wire.clone(), 1000, chunk).await;
            let error = result.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
            let exceeded = cap.exceeded().unwrap();
            assert_eq!(
                exceeded,
                MessageTooLarge {
                    size: (1 << 30) + 5,
                    cap: 1000
                }
            );
            assert!(
                error.to_string().contains("over the 1000-byte limit"),
                "{error}"
            );
        }
    }

    #[tokio::test]
    async fn negative_and_short_lengths_are_refused() {
        for length in [-1i32, 0, 3, i32::MIN] {
            let mut wire = vec![b'D'];
            wire.extend_from_slice(&length.to_be_bytes());
            let (result, cap) = read_all(wire, 1000, 64).await;
            assert!(
                result
                    .unwrap_err()
                    .to_string()
                    .contains("invalid message length")
            );
            assert_eq!(cap.exceeded(), None);
        }
    }
}
