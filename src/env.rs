//! The process environment, read through one trait so that tests pass a map instead of
//! touching the real environment.

use std::collections::HashMap;

/// Where environment variables come from.
pub trait Env {
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}

impl Env for [(&str, &str)] {
    fn get(&self, key: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn get(&self, key: &str) -> Option<String> {
        self(key)
    }
}
