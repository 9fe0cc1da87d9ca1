//! The mechanism behind `Builder::dump_on_signal`: a signal handler that
//! only writes the signal's number into a pipe (`write(2)` is
//! async-signal-safe; nothing else is done in the handler), and one
//! `kvant-dump` thread that reads the pipe and calls the policy's function
//! (`runtime/dump.rs`), which takes and prints the dumps. The program goes
//! on running throughout.

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

/// The pipe's write end, for the handler (-1 until set up).
static PIPE_W: AtomicI32 = AtomicI32::new(-1);
/// Signals with our handler installed (guards the setup too).
static INSTALLED: Mutex<Vec<i32>> = Mutex::new(Vec::new());

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = PIPE_W.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; `b` is a live local byte.
        // A full pipe drops this request (dumps already pending cover it).
        unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
    }
}

/// Call `dump(sig)` on the `kvant-dump` thread each time `sig` arrives.
/// Installing the same signal twice is a no-op.
pub(crate) fn watch(sig: i32, dump: fn(i32)) -> io::Result<()> {
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if installed.contains(&sig) {
        return Ok(());
    }
    if PIPE_W.load(Ordering::Relaxed) < 0 {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let read_fd = fds[0];
        // The reader blocks: clear O_NONBLOCK on its end only.
        // SAFETY: `read_fd` is the pipe's read end we just created.
        unsafe { libc::fcntl(read_fd, libc::F_SETFL, 0) };
        std::thread::Builder::new()
            .name("kvant-dump".into())
            .spawn(move || {
                let mut b = 0u8;
                loop {
                    // SAFETY: reads one byte into `b`, a live local.
                    let n = unsafe { libc::read(read_fd, (&mut b as *mut u8).cast(), 1) };
                    match n {
                        1 => dump(i32::from(b)),
                        -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                        _ => return,
                    }
                }
            })?;
        PIPE_W.store(fds[1], Ordering::Release);
    }
    // SAFETY: a zeroed sigaction is valid; we set the handler and an empty
    // mask, and `on_signal` only calls write(2).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    installed.push(sig);
    Ok(())
}
