//! A connection's read-ahead, bounded while its request is busy with what
//! it took.
//!
//! actix-http reads a connection ahead of the handler that takes its body:
//! up to 32 KiB queued in the payload and up to 128 KiB more in its read
//! buffer, and each piece it hands out keeps the whole buffer it was cut
//! from alive. A request that waits for the disk with a piece in hand thus
//! holds two or three buffers of 132 KiB; with 64 uploads on a slow disk
//! that was more than the segments they waited for. So every socket is
//! read through a [`GatedIo`], which stops reading once the body is
//! [`READ_AHEAD`] bytes ahead of its taker, a [`GatedPayload`], but only
//! while the taker is busy with a piece it took (writing or hashing it). A
//! taker that asks for more opens the gate again: one that keeps up is never
//! held back, and a miscount (the count also holds request heads and chunk
//! framing) can never stall a request.
//!
//! The same wrapper puts a request's interim (1xx) response on the wire,
//! which actix-http has no API for ([`Interim`]).

use actix_web::dev;
use actix_web::error::PayloadError;
use actix_web::{web, HttpRequest};
use bytes::Bytes;
use futures_util::{ready, Stream};
use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How far a connection is read ahead of a request busy with its body.
pub const READ_AHEAD: usize = 32 * 1024;

/// The shared state of one connection's reader and its request's taker:
/// both run on the connection's worker thread.
#[derive(Default)]
pub struct ReadGate {
    /// A body is being taken: reads are bounded.
    bounded: Cell<bool>,
    /// Its taker is busy with a piece it took: reads stop at the bound.
    busy: Cell<bool>,
    /// Bytes read off the socket and not yet taken.
    ahead: Cell<usize>,
    /// The reader waiting for the gate to open.
    reader: Cell<Option<Waker>>,
    /// An interim response to write before anything else actix-http
    /// writes, and how much of it was written.
    interim: Cell<Option<(Bytes, usize)>>,
}

impl ReadGate {
    fn is_closed(&self) -> bool {
        self.bounded.get() && self.busy.get() && self.ahead.get() >= READ_AHEAD
    }

    fn read(&self, n: usize) {
        if self.bounded.get() {
            self.ahead.set(self.ahead.get() + n);
        }
    }

    /// The taker asks for more.
    fn asking(&self) {
        self.busy.set(false);
        self.wake_reader();
    }

    /// The taker took `n` bytes, and is busy with them.
    fn taken(&self, n: usize) {
        self.ahead.set(self.ahead.get().saturating_sub(n));
        self.busy.set(true);
    }

    /// The taker found nothing to take: whatever was counted is not there.
    fn starved(&self) {
        self.ahead.set(0);
    }

    fn begin(&self) {
        self.bounded.set(true);
        self.ahead.set(0);
    }

    fn end(&self) {
        self.bounded.set(false);
        self.busy.set(false);
        self.wake_reader();
    }

    fn wake_reader(&self) {
        if let Some(waker) = self.reader.take() {
            waker.wake();
        }
    }
}

/// A connection's socket, read no further than its gate allows.
pub struct GatedIo<T> {
    io: T,
    gate: Rc<ReadGate>,
}

impl<T> GatedIo<T> {
    pub fn new(io: T) -> Self {
        GatedIo {
            io,
            gate: Rc::default(),
        }
    }

    /// The gate, for the requests of this connection (`HttpRequest::conn_data`).
    pub fn gate(&self) -> Rc<ReadGate> {
        self.gate.clone()
    }
}

impl<T: AsyncWrite + Unpin> GatedIo<T> {
    /// Writes the queued interim response; with `begun_only`, only the
    /// rest of one that began to go out.
    fn write_interim(&mut self, cx: &mut Context<'_>, begun_only: bool) -> Poll<io::Result<()>> {
        while let Some((head, sent)) = self.gate.interim.take() {
            if begun_only && sent == 0 {
                self.gate.interim.set(Some((head, sent)));
                break;
            }
            match Pin::new(&mut self.io).poll_write(cx, &head[sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) if sent + n < head.len() => {
                    self.gate.interim.set(Some((head, sent + n)));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => {
                    self.gate.interim.set(Some((head, sent)));
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GatedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.gate.is_closed() {
            this.gate.reader.set(Some(cx.waker().clone()));
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            this.gate.read(buf.filled().len() - before);
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GatedIo<T> {
    // actix-http writes what it buffered (maybe the end of an earlier
    // response) and only then flushes: an interim response goes out at the
    // flush, and one that began to go out is finished before anything else.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.write_interim(cx, true))?;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.write_interim(cx, true))?;
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.write_interim(cx, false))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// An interim (1xx) response queued on a request's connection. It goes on
/// the wire at the connection's next flush: after what actix-http wrote
/// before (an earlier response's end), before the final response. The
/// handler holds it while it works; dropped before it began to go out, it
/// is withdrawn, so that it can never follow the final response.
pub struct Interim {
    gate: Rc<ReadGate>,
}

impl Interim {
    /// Queues `head` (a 1xx status line and fields, ending with the empty
    /// line) for the connection of `req`; None where the connection cannot
    /// carry it (not HTTP/1.1, or not read through a gate).
    pub fn send(req: &HttpRequest, head: String) -> Option<Interim> {
        if req.version() != actix_web::http::Version::HTTP_11 {
            return None;
        }
        let gate = req.conn_data::<Rc<ReadGate>>()?.clone();
        let unsent = gate.interim.take().filter(|(_, sent)| *sent > 0);
        gate.interim.set(unsent.or(Some((Bytes::from(head), 0))));
        Some(Interim { gate })
    }
}

impl Drop for Interim {
    fn drop(&mut self) {
        let begun = self.gate.interim.take().filter(|(_, sent)| *sent > 0);
        self.gate.interim.set(begun);
    }
}

/// A request body whose taking bounds its connection's read-ahead, from
/// its first poll until it is dropped.
pub struct GatedPayload {
    payload: dev::Payload,
    gate: Option<Rc<ReadGate>>,
    begun: bool,
}

impl GatedPayload {
    pub fn new(req: &HttpRequest, payload: web::Payload) -> Self {
        GatedPayload {
            payload: payload.into_inner(),
            gate: req.conn_data::<Rc<ReadGate>>().cloned(),
            begun: false,
        }
    }
}

impl Stream for GatedPayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(gate) = &this.gate {
            if !this.begun {
                this.begun = true;
                gate.begin();
            }
            gate.asking();
        }
        let next = Pin::new(&mut this.payload).poll_next(cx);
        if let Some(gate) = &this.gate {
            match &next {
                Poll::Pending => gate.starved(),
                Poll::Ready(Some(Ok(bytes))) => gate.taken(bytes.len()),
                Poll::Ready(_) => {}
            }
        }
        next
    }
}

impl Drop for GatedPayload {
    fn drop(&mut self) {
        if let (Some(gate), true) = (&self.gate, self.begun) {
            gate.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A socket with bytes always waiting.
    struct Endless;

    impl AsyncRead for Endless {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            buf.put_slice(&vec![7; buf.remaining()]);
            Poll::Ready(Ok(()))
        }
    }

    /// A waker that records whether it was woken.
    struct Woken(AtomicBool);

    impl std::task::Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// Bytes one read gets into a buffer of `space`; None when it waits.
    fn read(io: &mut GatedIo<Endless>, cx: &mut Context<'_>, space: usize) -> Option<usize> {
        let mut bytes = vec![0; space];
        let mut buf = ReadBuf::new(&mut bytes);
        match Pin::new(io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => Some(buf.filled().len()),
            Poll::Ready(Err(err)) => panic!("{err}"),
            Poll::Pending => None,
        }
    }

    /// A socket that keeps what is written to it.
    #[derive(Default)]
    struct Wire(Vec<u8>);

    impl AsyncWrite for Wire {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().0.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn queue(io: &GatedIo<Wire>, head: &'static [u8], sent: usize) -> Interim {
        io.gate.interim.set(Some((Bytes::from_static(head), sent)));
        Interim { gate: io.gate() }
    }

    fn write(io: &mut GatedIo<Wire>, bytes: &[u8]) {
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(
            Pin::new(io).poll_write(&mut cx, bytes),
            Poll::Ready(Ok(n)) if n == bytes.len()
        ));
    }

    fn flush(io: &mut GatedIo<Wire>) {
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(io).poll_flush(&mut cx).is_ready());
    }

    #[test]
    fn an_interim_response_goes_between_the_responses_around_it() {
        // What was buffered before (an earlier response's end) goes first;
        // the interim response goes at the flush.
        let mut io = GatedIo::new(Wire::default());
        let interim = queue(&io, b"104\r\n\r\n", 0);
        write(&mut io, b"earlier;");
        flush(&mut io);
        drop(interim);
        write(&mut io, b"final");
        assert_eq!(io.io.0, b"earlier;104\r\n\r\nfinal");

        // Withdrawn when the request ends before it went out.
        let mut io = GatedIo::new(Wire::default());
        drop(queue(&io, b"104\r\n\r\n", 0));
        write(&mut io, b"final");
        flush(&mut io);
        assert_eq!(io.io.0, b"final");

        // Begun, it is finished before anything else.
        let mut io = GatedIo::new(Wire::default());
        drop(queue(&io, b"104\r\n\r\n", 2));
        write(&mut io, b"final");
        assert_eq!(io.io.0, b"4\r\n\r\nfinal");
    }

    #[test]
    fn reads_stop_ahead_of_a_busy_taker_until_it_asks_for_more() {
        let mut io = GatedIo::new(Endless);
        let gate = io.gate();
        let woken = Arc::new(Woken(AtomicBool::new(false)));
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let was_woken = || woken.0.swap(false, Ordering::SeqCst);
        let unbounded = |io: &mut GatedIo<Endless>, cx: &mut Context<'_>| {
            for _ in 0..3 {
                assert_eq!(read(io, cx, READ_AHEAD), Some(READ_AHEAD));
            }
        };

        // No body is being taken: reads are not bounded.
        gate.taken(1);
        unbounded(&mut io, &mut cx);

        // A taker that asks for more is not held back.
        gate.begin();
        gate.asking();
        unbounded(&mut io, &mut cx);

        // Busy with what it took, it holds the reader at the bound.
        gate.starved();
        gate.taken(0);
        let mut ahead = 0;
        while let Some(n) = read(&mut io, &mut cx, 10_000) {
            ahead += n;
        }
        assert_eq!(ahead, READ_AHEAD.div_ceil(10_000) * 10_000);
        gate.taken(10_000);
        assert!(!was_woken(), "taking alone does not wake the reader");
        assert_eq!(read(&mut io, &mut cx, 10_000), Some(10_000));
        assert_eq!(read(&mut io, &mut cx, 10_000), None);

        gate.asking();
        assert!(was_woken(), "asking for more opens the gate");
        unbounded(&mut io, &mut cx);

        gate.taken(0);
        assert_eq!(read(&mut io, &mut cx, 1), None);
        gate.end();
        assert!(was_woken(), "the end of the body opens the gate");
        gate.taken(0);
        unbounded(&mut io, &mut cx);
    }
}
