//! A kernel's defmt log: its frames on COM2, decoded by `defmt-print -e
//! <ELF>` when that is on PATH (`cargo install defmt-print`), or where the
//! frames are and how to decode them. Informational only: the verdict
//! comes from the text console.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use super::wait_with_deadline;

/// Wall-clock limit for decoding one kernel's frames.
const DECODE_TIMEOUT: Duration = Duration::from_secs(30);

/// Prints the decoded frames of the kernel `elf` from the file `frames`.
pub fn show(tag: &str, elf: &Path, frames: &Path) {
    let size = std::fs::metadata(frames).map(|m| m.len()).unwrap_or(0);
    if size == 0 {
        println!(
            "[{tag} defmt] no frames on COM2 ({} is empty or missing)",
            frames.display()
        );
        return;
    }
    let decode = format!("defmt-print -e {} < {}", elf.display(), frames.display());
    let Ok(input) = std::fs::File::open(frames) else {
        println!("[{tag} defmt] cannot open {}", frames.display());
        return;
    };
    let child = Command::new("defmt-print")
        .arg("-e")
        .arg(elf)
        .stdin(input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!(
                "[{tag} defmt] {size} bytes of frames in {}; defmt-print is not installed \
                 (`cargo install defmt-print`), decode with: {decode}",
                frames.display()
            );
            return;
        }
        Err(e) => {
            println!("[{tag} defmt] cannot run defmt-print ({e}); decode with: {decode}");
            return;
        }
    };
    let stdout = child.stdout.take().expect("stdout is piped");
    let out_tag = tag.to_string();
    let lines = thread::spawn(move || {
        let mut n = 0usize;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            println!("[{out_tag} defmt] {line}");
            n += 1;
        }
        n
    });
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let errors = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = wait_with_deadline(&mut child, DECODE_TIMEOUT);
    let n = lines.join().unwrap_or(0);
    let errors = errors.join().unwrap_or_default();
    match status {
        Ok(Some(s)) if s.success() && n > 0 => {}
        Ok(Some(s)) => {
            for line in errors.lines() {
                println!("[{tag} defmt] defmt-print: {line}");
            }
            println!("[{tag} defmt] defmt-print decoded {n} lines ({s}); by hand: {decode}");
        }
        Ok(None) => println!(
            "[{tag} defmt] defmt-print did not finish in {} s; by hand: {decode}",
            DECODE_TIMEOUT.as_secs()
        ),
        Err(e) => println!("[{tag} defmt] waiting for defmt-print: {e}; by hand: {decode}"),
    }
}
