//! Moving a socket between executors. glommio streams are bound to the
//! executor that made them and offer no `into_raw_fd`, so a hand-off
//! duplicates the descriptor, drops the original stream, and rebuilds a
//! stream from the duplicate on the owning shard.

// Borrowing the descriptor of a glommio stream and building a stream from
// an owned descriptor both go through raw descriptors, which std marks
// `unsafe`; each use below states why it holds.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};

use glommio::net::TcpStream;

/// Takes a socket out of this executor: a duplicate of its descriptor (the
/// original closes when `stream` drops; the connection lives on in the
/// duplicate, with everything the kernel buffered).
pub fn detach(stream: TcpStream) -> std::io::Result<OwnedFd> {
    // SAFETY: the descriptor belongs to `stream`, which outlives the borrow
    // (it is dropped only after the duplicate is made).
    let borrowed = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let fd = borrowed.try_clone_to_owned()?;
    drop(stream);
    Ok(fd)
}

/// Makes an executor-local stream of a socket handed over by another shard.
pub fn attach(fd: OwnedFd) -> TcpStream {
    // SAFETY: `fd` is an open TCP socket that we own; ownership moves into
    // the stream, which closes it.
    unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) }
}
