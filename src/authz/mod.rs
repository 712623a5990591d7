//! The Check path: CheckRequest -> input document -> decision -> CheckResponse.

pub mod input;
