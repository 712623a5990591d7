//! The gateway command line.
