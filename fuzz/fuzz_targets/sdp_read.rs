//! Any text as a producer's offer (and, after a NUL, as an answer to it): parsed or
//! INVALID_SDP, one section per m= line, a plan consistent with its offer (the properties of
//! tests/support/sdp_checks.rs, shared with tests/fuzz_sdp.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mediaserver_rs::sfu::sdp;

#[path = "../../tests/support/sdp_corpus.rs"]
mod corpus;
#[path = "../../tests/support/sdp_checks.rs"]
mod sdp_checks;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (offer, answer) = text.split_once('\0').unwrap_or((&text, ""));
    sdp_checks::check_all(offer);
    if !answer.is_empty() {
        sdp_checks::check_all(answer);
        if let (Ok(o), Ok(a)) = (sdp::media_sections(offer), sdp::media_sections(answer)) {
            let result = sdp::check_answer_matches_offer(&o, &a, answer);
            sdp_checks::expect_invalid_sdp("check_answer_matches_offer", answer, &result);
            if result.is_ok() {
                assert_eq!(o.len(), a.len());
            }
        }
    }
});
