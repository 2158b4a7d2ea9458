//! Accepting connections evenly across the serving threads.
//!
//! Every serving thread accepts from the one listening socket. Left to themselves, whichever
//! thread wakes first takes a whole burst of new connections, and a client's keep-alive
//! connections then stay on one thread while the other idles (measured: all 64 connections of
//! the proxy benchmark on one thread in some runs, split in others). With [`Balanced`], a thread
//! that accepts a connection while it serves two or more connections more than the least busy
//! thread hands it to that thread, which serves it from then on. Only the accept is handed over:
//! the connection's requests stay on the thread that serves it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

type Handed = (std::net::TcpStream, SocketAddr);

/// What the serving threads share: how many connections each serves now, and a way to hand
/// each one a connection.
#[derive(Clone)]
pub struct Threads {
    load: Arc<[AtomicUsize]>,
    inboxes: Arc<[mpsc::UnboundedSender<Handed>]>,
}

impl Threads {
    /// The shared state of `n` threads, and each thread's inbox (give the `i`-th to thread `i`).
    pub fn new(n: usize) -> (Self, Vec<Inbox>) {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..n.max(1)).map(|_| mpsc::unbounded_channel()).unzip();
        (
            Threads {
                load: (0..senders.len()).map(|_| AtomicUsize::new(0)).collect(),
                inboxes: senders.into(),
            },
            receivers.into_iter().map(Inbox).collect(),
        )
    }

    /// How many connections thread `i` serves.
    pub fn load_of(&self, i: usize) -> usize {
        self.load[i].load(Ordering::Relaxed)
    }

    /// The least busy thread, when thread `me` serves at least two connections more.
    fn less_busy_than(&self, me: usize) -> Option<usize> {
        let (least, n) = self
            .load
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .enumerate()
            .min_by_key(|(_, n)| *n)?;
        (self.load_of(me) >= n + 2).then_some(least)
    }
}

/// Connections handed to one thread by the others.
pub struct Inbox(mpsc::UnboundedReceiver<Handed>);

/// One serving thread's side of the shared listening socket.
pub struct Balanced {
    listener: tokio::net::TcpListener,
    inbox: Inbox,
    me: usize,
    threads: Threads,
}

impl Balanced {
    /// Thread `me`'s listener on (a duplicate of) `listener`, with its inbox; call on that
    /// thread's event loop.
    pub fn new(
        listener: std::net::TcpListener,
        me: usize,
        threads: Threads,
        inbox: Inbox,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(Balanced {
            listener: tokio::net::TcpListener::from_std(listener)?,
            inbox,
            me,
            threads,
        })
    }

    fn serve_here(&self, stream: tokio::net::TcpStream, counted: bool) -> Counted {
        let _ = stream.set_nodelay(true);
        if !counted {
            self.threads.load[self.me].fetch_add(1, Ordering::Relaxed);
        }
        Counted {
            stream,
            threads: self.threads.clone(),
            me: self.me,
        }
    }

    async fn accept_one(&mut self) -> io::Result<(Counted, SocketAddr)> {
        loop {
            let (stream, addr) = tokio::select! {
                biased;
                Some((stream, addr)) = self.inbox.0.recv() => {
                    // Counted for this thread by the one that handed it over.
                    let stream = tokio::net::TcpStream::from_std(stream)?;
                    return Ok((self.serve_here(stream, true), addr));
                }
                accepted = self.listener.accept() => accepted?,
            };
            if let Some(other) = self.threads.less_busy_than(self.me) {
                let stream = stream.into_std()?;
                self.threads.load[other].fetch_add(1, Ordering::Relaxed);
                match self.threads.inboxes[other].send((stream, addr)) {
                    Ok(()) => continue,
                    // That thread has stopped: serve it here after all.
                    Err(mpsc::error::SendError((stream, addr))) => {
                        self.threads.load[other].fetch_sub(1, Ordering::Relaxed);
                        let stream = tokio::net::TcpStream::from_std(stream)?;
                        return Ok((self.serve_here(stream, false), addr));
                    }
                }
            }
            return Ok((self.serve_here(stream, false), addr));
        }
    }
}

impl axum::serve::Listener for Balanced {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Counted, SocketAddr) {
        loop {
            match self.accept_one().await {
                Ok(accepted) => return accepted,
                // The peer gave up before it was accepted: nothing to do.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::ConnectionRefused
                    ) => {}
                // Out of file descriptors and the like: wait instead of spinning.
                Err(e) => {
                    tracing::error!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// An accepted connection, counted for its thread while it lives.
pub struct Counted {
    stream: tokio::net::TcpStream,
    threads: Threads,
    me: usize,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.threads.load[self.me].fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;

    /// Accepts on `n` event loops of their own (threads whose index is in `running`), each
    /// keeping what it accepted, until `total` connections were accepted in all; returns how
    /// many each took.
    fn accept_on_threads(
        listener: &std::net::TcpListener,
        threads: &Threads,
        inboxes: Vec<Inbox>,
        running: &[usize],
        total: usize,
        connect: impl FnOnce(),
    ) -> Vec<usize> {
        let accepted = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = inboxes
            .into_iter()
            .enumerate()
            .filter(|(i, _)| running.contains(i))
            .map(|(i, inbox)| {
                let (listener, threads, accepted) = (
                    listener.try_clone().unwrap(),
                    threads.clone(),
                    accepted.clone(),
                );
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async move {
                        let mut l = Balanced::new(listener, i, threads, inbox).unwrap();
                        let mut kept = Vec::new();
                        loop {
                            tokio::select! {
                                (io, _) = l.accept() => {
                                    kept.push(io);
                                    accepted.fetch_add(1, Ordering::SeqCst);
                                }
                                _ = tokio::time::sleep(Duration::from_millis(50)) => {
                                    if accepted.load(Ordering::SeqCst) >= total {
                                        return kept.len();
                                    }
                                }
                            }
                        }
                    })
                })
            })
            .collect();
        connect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn a_burst_of_connections_is_spread_over_the_threads() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (threads, inboxes) = Threads::new(2);
        let mut clients = Vec::new();
        let took = accept_on_threads(&listener, &threads, inboxes, &[0, 1], 40, || {
            for _ in 0..40 {
                clients.push(std::net::TcpStream::connect(addr).unwrap());
            }
        });
        assert_eq!(took.iter().sum::<usize>(), 40, "{took:?}");
        assert!(
            took[0].abs_diff(took[1]) <= 2,
            "40 connections in a burst were split {took:?}"
        );
        // Each thread's connections were counted while it held them, and released after.
        assert_eq!((threads.load_of(0), threads.load_of(1)), (0, 0));
    }

    #[test]
    fn connections_for_a_thread_that_stopped_are_served_by_the_one_that_accepted_them() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Thread 1 has stopped (its inbox is gone): thread 0 is soon two ahead of it.
        let (threads, mut inboxes) = Threads::new(2);
        drop(inboxes.pop());
        let mut clients = Vec::new();
        let took = accept_on_threads(&listener, &threads, inboxes, &[0], 6, || {
            for _ in 0..6 {
                clients.push(std::net::TcpStream::connect(addr).unwrap());
            }
        });
        assert_eq!(took, vec![6]);
        assert_eq!(threads.load_of(1), 0);
    }
}
