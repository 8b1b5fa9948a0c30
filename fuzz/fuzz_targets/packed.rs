//! The packed bundle document (`portcullis pack`) through `Packed::load`:
//! whatever the input, a bundle is either refused with problems or loaded
//! with exactly the hash the document claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_engine::bundle::Packed;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Packed::load(text) {
        Ok(bundle) => {
            let claimed: Option<String> = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v["hash"].as_str().map(str::to_string));
            assert_eq!(claimed.as_deref(), Some(bundle.info().hash.as_str()));
        }
        Err(problems) => assert!(!problems.is_empty(), "a refusal names its problems"),
    }
});
