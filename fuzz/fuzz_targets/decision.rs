//! The decision mapping: any JSON document a policy could produce, as a decision, then as the
//! Check response (and its dry-run form).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::authz::decision::Decision;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(value) = regorus::Value::from_json_str(text) else {
        return;
    };
    if let Ok(decision) = Decision::try_from(&value) {
        let allowed = decision.allowed();
        let dry = decision.clone().into_response("id", true);
        assert_eq!(
            dry.status.map_or(0, |s| s.code),
            0,
            "dry-run always answers OK"
        );
        let response = decision.into_response("id", false);
        assert_eq!(response.status.map_or(0, |s| s.code) == 0, allowed);
    }
});
