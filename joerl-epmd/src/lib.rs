//! joerl-epmd: the port mapper daemon and its client (filled by its issue).
#![warn(missing_docs)]
