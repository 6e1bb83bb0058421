//! `cargo xtask setup`: installs what the build and the tests need.
//!
//! Idempotent: every item is checked first and installed only when it is
//! missing, with one line per item saying which. Owns the tool list (Rust
//! targets and components, the pinned nightly for Miri and its sysroots, the
//! MSRV toolchain, QEMU); it does not build or run anything of the project.
//!
//! QEMU 10 comes from Debian's bookworm-backports suite: bookworm's own QEMU
//! 7.2 conflicts with the preinstalled qemu-utils 10. The suite is added to
//! the main archive stanza of the existing deb822 sources file rather than
//! in a file of our own, so no mirror address is ever written by us.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::arch::Arch;
use crate::toolchain::{miri_cache_home, msrv, MIRI_TARGETS, MIRI_TOOLCHAIN};

/// Targets the active toolchain needs: the kernels' (and the cross clippy
/// steps') of every arch.
const TARGETS: [Arch; 2] = Arch::ALL;
/// Components the active toolchain needs.
const COMPONENTS: &[&str] = &["clippy", "rustfmt"];
/// Components of the pinned nightly.
const MIRI_COMPONENTS: &[&str] = &["miri", "rust-src"];

/// The deb822 sources file whose main stanza gets the backports suite.
const SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";
/// How the `Suites:` line of the main archive stanza starts (the security
/// stanza's starts with `bookworm-security`).
const MAIN_SUITES: &[&str] = &["bookworm", "bookworm-updates"];
const BACKPORTS: &str = "bookworm-backports";
/// The emulators. Their dependencies bring the firmware the kernels boot
/// with (qemu-system-data: qboot, s390-ccw.img; seabios); their
/// recommendations (a GUI with GTK, GStreamer and Mesa, SPICE and OpenGL
/// modules, OVMF, block drivers, qemu-utils) are for a desktop, not for
/// `-display none -nodefaults`, and are not installed.
const QEMU_PACKAGES: &[&str] = &["qemu-system-x86", "qemu-system-s390x"];
/// The QEMU major version the runners are written against.
const QEMU_MAJOR: &str = "10";

/// Runs every item; `Err` names the first item that could not be set up.
pub fn run() -> Result<(), String> {
    rustup_present()?;
    targets()?;
    components()?;
    miri_toolchain()?;
    miri_sysroots()?;
    msrv_toolchain()?;
    qemu()?;
    println!("setup: done");
    Ok(())
}

/// Runs a command with no stdin and captures its output.
fn capture(program: &str, args: &[&str]) -> Result<Output, String> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))
}

/// Runs a command with no stdin, its output going to ours; `Err` unless it
/// succeeds.
fn install(program: &str, args: &[&str]) -> Result<(), String> {
    println!("  $ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        // Never ask a question: CI has no stdin.
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({status})", args.join(" ")))
    }
}

/// The command's stdout as lines, if it succeeded.
fn lines(program: &str, args: &[&str]) -> Result<Vec<String>, String> {
    let out = capture(program, args)?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

fn rustup_present() -> Result<(), String> {
    let out = capture("rustup", &["--version"]).map_err(|e| {
        format!(
            "{e}: this project needs rustup (its toolchains and targets are installed through it)"
        )
    })?;
    let version = String::from_utf8_lossy(&out.stdout);
    println!(
        "rustup {}: present",
        version.split_whitespace().nth(1).unwrap_or("?")
    );
    Ok(())
}

/// The host triple (`rustc -vV`), which rustup appends to the names of
/// host components (`clippy-x86_64-unknown-linux-gnu`).
fn host() -> Result<String, String> {
    lines("rustc", &["-vV"])?
        .iter()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .ok_or_else(|| "`rustc -vV` names no host".to_string())
}

/// Whether a `rustup ... list --installed` output holds `name`, either
/// bare (`rust-src`, a target) or with the host suffix.
fn has_item(installed: &[String], name: &str, host: &str) -> bool {
    let with_host = format!("{name}-{host}");
    installed.iter().any(|line| {
        let item = line.split_whitespace().next().unwrap_or("");
        item == name || item == with_host
    })
}

fn targets() -> Result<(), String> {
    let installed = lines("rustup", &["target", "list", "--installed"])?;
    for target in TARGETS.map(Arch::triple) {
        if has_item(&installed, target, "") {
            println!("rust target {target}: present");
        } else {
            println!("rust target {target}: installing");
            install("rustup", &["target", "add", target])?;
        }
    }
    Ok(())
}

fn components() -> Result<(), String> {
    let host = host()?;
    let installed = lines("rustup", &["component", "list", "--installed"])?;
    for component in COMPONENTS {
        if has_item(&installed, component, &host) {
            println!("rust component {component}: present");
        } else {
            println!("rust component {component}: installing");
            install("rustup", &["component", "add", component])?;
        }
    }
    Ok(())
}

/// Whether rustup has the toolchain `name` (listed as `name-<host>`).
fn toolchain_installed(name: &str) -> Result<bool, String> {
    let list = lines("rustup", &["toolchain", "list"])?;
    Ok(list.iter().any(|line| {
        let tc = line.split_whitespace().next().unwrap_or("");
        tc == name
            || tc
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('-'))
    }))
}

fn miri_toolchain() -> Result<(), String> {
    let tc = MIRI_TOOLCHAIN;
    if !toolchain_installed(tc)? {
        println!("toolchain {tc} (for Miri): installing");
        return install(
            "rustup",
            &[
                "toolchain",
                "install",
                tc,
                "--profile",
                "minimal",
                "--component",
                &MIRI_COMPONENTS.join(","),
            ],
        );
    }
    let host = host()?;
    let installed = lines(
        "rustup",
        &["component", "list", "--installed", "--toolchain", tc],
    )?;
    let missing: Vec<&str> = MIRI_COMPONENTS
        .iter()
        .copied()
        .filter(|c| !has_item(&installed, c, &host))
        .collect();
    if missing.is_empty() {
        println!(
            "toolchain {tc} with {}: present",
            MIRI_COMPONENTS.join(", ")
        );
        return Ok(());
    }
    println!("toolchain {tc}: present; installing {}", missing.join(", "));
    let mut args = vec!["component", "add", "--toolchain", tc];
    args.extend(missing);
    install("rustup", &args)
}

/// Builds Miri's sysroots now (a no-op when they are current), so that the
/// first `cargo xtask test` does not spend its time there and a broken
/// nightly shows up here.
fn miri_sysroots() -> Result<(), String> {
    let plus = format!("+{MIRI_TOOLCHAIN}");
    for target in MIRI_TARGETS {
        let mut args = vec![plus.as_str(), "miri", "setup"];
        if let Some(arch) = target {
            args.extend(["--target", arch.triple()]);
        }
        let label = target.map_or("host", Arch::triple);
        // A first build takes a minute: say what we wait for.
        print!("miri sysroot ({label}): ");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        // Outside cargo's own environment: the proxy must pick the nightly,
        // and cargo-miri must find the nightly's cargo, not ours.
        let out = Command::new("cargo")
            .args(&args)
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO")
            .env("XDG_CACHE_HOME", miri_cache_home())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !out.status.success() {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            return Err(format!(
                "`cargo {}` failed ({})",
                args.join(" "),
                out.status
            ));
        }
        println!("ready");
    }
    Ok(())
}

fn msrv_toolchain() -> Result<(), String> {
    let Some(v) = msrv() else {
        println!("MSRV toolchain: no rust-version in Cargo.toml, skipped");
        return Ok(());
    };
    if toolchain_installed(&v)? {
        println!("toolchain {v} (MSRV): present");
        return Ok(());
    }
    println!("toolchain {v} (MSRV): installing");
    install(
        "rustup",
        &["toolchain", "install", &v, "--profile", "minimal"],
    )
}

/// `Some(version)` when `program --version` runs; the version is the word
/// after `version`.
fn qemu_version(program: &str) -> Option<String> {
    let out = capture(program, &["--version"]).ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = text.split_whitespace();
    words.find(|w| *w == "version")?;
    Some(words.next().unwrap_or("unknown").to_string())
}

fn qemu_ok() -> (bool, Vec<String>) {
    let mut ok = true;
    let mut report = Vec::new();
    for program in ["qemu-system-x86_64", "qemu-system-s390x"] {
        match qemu_version(program) {
            Some(v) if v.split('.').next() == Some(QEMU_MAJOR) => {
                report.push(format!("{program} {v}: present"));
            }
            Some(v) => {
                ok = false;
                report.push(format!("{program} {v}: present but not {QEMU_MAJOR}.x"));
            }
            None => {
                ok = false;
                report.push(format!("{program}: missing"));
            }
        }
    }
    (ok, report)
}

fn qemu() -> Result<(), String> {
    let (ok, report) = qemu_ok();
    for line in &report {
        println!("{line}");
    }
    if ok {
        return Ok(());
    }
    let sources = Path::new(SOURCES);
    let text = std::fs::read_to_string(sources).map_err(|e| {
        format!("QEMU {QEMU_MAJOR} comes from Debian {BACKPORTS}, but {SOURCES} cannot be read ({e}); install qemu-system-x86 and qemu-system-s390x {QEMU_MAJOR}.x by hand")
    })?;
    let edited = add_backports(&text).map_err(|e| format!("{SOURCES}: {e}"))?;

    if !is_root() {
        let sudo = |cmd: &str| println!("  sudo {cmd}");
        println!(
            "QEMU {QEMU_MAJOR}: installing needs root; run these, then `cargo xtask setup` again:"
        );
        if edited.is_some() {
            sudo(&format!(
                "sed -i '/^Suites: {}/{{/{BACKPORTS}/!s/$/ {BACKPORTS}/}}' {SOURCES}",
                MAIN_SUITES.join(" ")
            ));
        }
        sudo("apt-get update");
        sudo(&format!("apt-get {}", apt_install_args().join(" ")));
        return Err("QEMU: not installed (needs root)".into());
    }

    match edited {
        Some(new) => {
            println!("apt suite {BACKPORTS}: adding to {SOURCES}");
            std::fs::write(sources, new).map_err(|e| format!("writing {SOURCES}: {e}"))?;
        }
        None => println!("apt suite {BACKPORTS}: present"),
    }
    println!("QEMU {QEMU_MAJOR}: installing {}", QEMU_PACKAGES.join(" "));
    install("apt-get", &["update"])?;
    install("apt-get", &apt_install_args())?;

    let (ok, report) = qemu_ok();
    for line in &report {
        println!("{line}");
    }
    if ok {
        Ok(())
    } else {
        Err(format!(
            "QEMU {QEMU_MAJOR}: still missing after apt-get install"
        ))
    }
}

/// `apt-get` arguments that install QEMU from backports: only what the
/// packages depend on, none of what they recommend.
fn apt_install_args() -> Vec<&'static str> {
    let mut args = vec!["install", "-y", "--no-install-recommends", "-t", BACKPORTS];
    args.extend(QEMU_PACKAGES);
    args
}

/// Whether we run as root (the owner of `/proc/self` is our effective uid).
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Adds the backports suite to the `Suites:` line of the main archive
/// stanza. `Ok(None)`: already there; `Err`: no such stanza.
fn add_backports(text: &str) -> Result<Option<String>, String> {
    let mut found = false;
    let mut changed = false;
    let mut out = String::with_capacity(text.len() + BACKPORTS.len() + 1);
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let ending = &line[body.len()..];
        let suites = body
            .strip_prefix("Suites:")
            .map(|v| v.split_whitespace().collect::<Vec<_>>());
        match suites {
            Some(words) if !found && words.starts_with(MAIN_SUITES) => {
                found = true;
                if words.contains(&BACKPORTS) {
                    out.push_str(line);
                } else {
                    changed = true;
                    out.push_str(body.trim_end());
                    out.push(' ');
                    out.push_str(BACKPORTS);
                    out.push_str(ending);
                }
            }
            _ => out.push_str(line),
        }
    }
    if !found {
        return Err(format!(
            "no stanza whose `Suites:` line starts with `{}`; add {BACKPORTS} to the apt sources by hand",
            MAIN_SUITES.join(" ")
        ));
    }
    Ok(changed.then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian's stock file, less its addresses.
    const STOCK: &str = "Types: deb\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nSuites: bookworm-security\nComponents: main\n";

    #[test]
    fn backports_is_appended_to_the_main_stanza_only() {
        let new = add_backports(STOCK).unwrap().expect("changed");
        assert!(new.contains("Suites: bookworm bookworm-updates bookworm-backports\n"));
        assert!(
            new.contains("Suites: bookworm-security\n"),
            "security stanza untouched"
        );
        assert_eq!(new.len(), STOCK.len() + " bookworm-backports".len());
    }

    #[test]
    fn adding_backports_twice_changes_nothing() {
        let once = add_backports(STOCK).unwrap().unwrap();
        assert_eq!(add_backports(&once).unwrap(), None);
    }

    #[test]
    fn sources_without_a_main_stanza_are_an_error() {
        assert!(add_backports("Types: deb\nSuites: bookworm-security\n").is_err());
    }

    #[test]
    fn qemu_is_installed_from_backports_without_recommendations() {
        assert_eq!(
            apt_install_args().join(" "),
            "install -y --no-install-recommends -t bookworm-backports qemu-system-x86 qemu-system-s390x",
            "no GUI, audio or GL stacks; no question asked"
        );
    }

    #[test]
    fn rustup_items_match_with_and_without_host_suffix() {
        let host = "x86_64-unknown-linux-gnu";
        let installed = vec![
            "clippy-x86_64-unknown-linux-gnu".to_string(),
            "rust-src".to_string(),
            "rust-std-x86_64-unknown-linux-gnu".to_string(),
            "x86_64-unknown-none".to_string(),
        ];
        assert!(has_item(&installed, "clippy", host));
        assert!(has_item(&installed, "rust-src", host));
        assert!(has_item(&installed, "x86_64-unknown-none", host));
        assert!(!has_item(&installed, "rustfmt", host));
        assert!(
            !has_item(&installed, "rust", host),
            "a prefix is not a match"
        );
    }
}
