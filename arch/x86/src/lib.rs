//! Placeholder while the arch layer is written.
#![no_std]
