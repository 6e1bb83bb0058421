//! The notifier core as a specification: who is called, for what, and when
//! it is safe to forget a notifier.
//!
//! Each test checks one behaviour of [`NotifierHead`] and [`Subscription`]
//! and is named after it. The concurrent tests use real threads; their
//! iteration counts are small under Miri (`cfg(miri)`) and are stated in
//! each test's docs. Timing (`sleep`) is used only to give a wrong
//! implementation the chance to fail: no assertion depends on a sleep being
//! long enough for a correct one to pass.
//!
//! Grouped by topic, so `cargo test -p mmu-notifier-core --test notifier
//! release::` selects one.
#![cfg(feature = "notifier")]

mod support;

mod concurrency;
mod dispatch;
mod embedding;
#[cfg(feature = "std")]
mod inside_callback;
mod range;
mod registration;
mod release;
