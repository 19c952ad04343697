//! Shared helpers for the joerl examples.
