//! The config loader: the first line is a list of `--set` overrides separated by `;`, the rest
//! a YAML config document.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (sets, yaml) = text.split_once('\n').unwrap_or((text, ""));
    let sets: Vec<String> = sets
        .split(';')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let _ = Config::load(None, &sets);
    if let Ok(tree) = yaml_serde::from_str::<serde_json::Value>(yaml) {
        let _ = Config::from_tree(tree, "fuzz");
    }
});
