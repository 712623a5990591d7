//! The Check path: CheckRequest -> input document -> decision -> CheckResponse.

pub mod decision;
pub mod input;
pub mod response;
pub mod service;
