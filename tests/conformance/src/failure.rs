//! Why a case failed: a formatted message that costs two words to return
//! and needs no allocator.
//!
//! Messages are copied into a static arena (32 KiB, at most 256 bytes
//! each, cut at a character boundary). Failures are rare, so the arena
//! lasts a whole run; once it is full a fixed text stands in for the
//! message.

use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicUsize, Ordering};

const ARENA_BYTES: usize = 32 * 1024;
/// The longest message kept.
const MESSAGE_BYTES: usize = 256;

/// Bytes below `USED` are written once, then only read: each message
/// reserves its own range with `fetch_add` before writing it.
struct Arena(UnsafeCell<[u8; ARENA_BYTES]>);

// SAFETY: writers only touch the range they reserved (see `Failure::new`),
// and a range is read only through the `Failure` its writer returns, after
// the write.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_BYTES]));
static USED: AtomicUsize = AtomicUsize::new(0);

/// A stack buffer that keeps the first `MESSAGE_BYTES` bytes written to it,
/// cut at a character boundary.
struct Cut {
    buf: [u8; MESSAGE_BYTES],
    len: usize,
}

impl Write for Cut {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut take = s.len().min(MESSAGE_BYTES - self.len);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

/// Why a case failed: a message.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Failure(&'static str);

impl Failure {
    /// A failure with a formatted message.
    pub fn new(args: fmt::Arguments<'_>) -> Self {
        let mut text = Cut {
            buf: [0; MESSAGE_BYTES],
            len: 0,
        };
        // A failing `Display` impl only shortens the message.
        let _ = text.write_fmt(args);
        let len = text.len;
        let start = USED.fetch_add(len, Ordering::Relaxed);
        if start + len > ARENA_BYTES {
            return Failure("(message lost: the failure arena is full)");
        }
        let dst = ARENA.0.get().cast::<u8>();
        // SAFETY: [start, start + len) lies inside the arena (checked) and
        // was reserved by the `fetch_add` above for this call alone; nobody
        // reads it before this returns.
        unsafe { core::ptr::copy_nonoverlapping(text.buf.as_ptr(), dst.add(start), len) };
        // SAFETY: 1. the range is initialised, never written again, and
        // lives in a static; 2. `Cut` keeps whole characters of `&str`s,
        // so it is UTF-8.
        Failure(unsafe {
            core::str::from_utf8_unchecked(core::slice::from_raw_parts(dst.add(start), len))
        })
    }

    /// The message.
    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl From<&'static str> for Failure {
    fn from(message: &'static str) -> Self {
        Failure(message)
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}
