//! Standard output of the one-shot commands, as a Unix tool writes it.
//!
//! `println!` panics when standard output is closed (`nodepool list |
//! head -1`). Listings go through [`print_result`] instead: a closed pipe
//! ends the process quietly with status 0, any other write error is
//! reported on stderr with status 1. Progress lines of a command that must
//! finish its work whether or not anybody reads them use [`progress`].

use std::fmt::Display;
use std::io::Write;

/// Print `text` and a newline: the command's result (a listing, a JSON
/// document, a confirmation).
pub(crate) fn print_result(text: impl Display) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        exit_on_write_error(&e);
    }
}

/// Print a progress line; a closed or failing standard output is ignored,
/// so the work it reports goes on.
pub(crate) fn progress(text: impl Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// Print a prompt (no newline) and flush it; failures are ignored.
pub(crate) fn prompt(text: impl Display) {
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{text}").and_then(|()| out.flush());
}

fn exit_on_write_error(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("nodepool: cannot write to standard output: {e}");
    std::process::exit(1);
}
