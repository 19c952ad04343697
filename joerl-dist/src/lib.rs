//! joerl-dist: the distribution layer (filled by its issue).
#![warn(missing_docs)]
