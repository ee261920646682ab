//! Property test of `produce` end to end (`MediaServerCore::produce`, on loopback): an offer
//! the SDP readers accept goes on to webrtc-rs (set_remote_description, create_answer,
//! set_local_description), whose failures the server reports as INVALID_SDP or, after the
//! offer was applied, INTERNAL. Whatever offer a client sends, `produce` answers it or refuses
//! it as INVALID_SDP / INVALID_ARGUMENT, never INTERNAL: real offers, offers every rule allows,
//! and both mutated.
//!
//! Each case opens a real upstream connection on loopback (a few milliseconds);
//! `PROPTEST_CASES=2000 cargo test --release --test fuzz_produce` runs a long session.

use mediaserver_rs::sfu::error::SfuError;
use mediaserver_rs::sfu::{api, events, MediaServerCore};
use proptest::prelude::*;
use serde_json::json;

#[path = "support/config.rs"]
mod config;
#[path = "support/sdp_corpus.rs"]
mod corpus;
#[path = "support/sdp_gen.rs"]
mod sdp_gen;

use sdp_gen::{apply, mutation, real_offer, valid_offer};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap())
}

/// Produces `sdp` as a new user's first offer; the error code, if any.
fn produce(sdp: &str) -> Result<(), SfuError> {
    runtime().block_on(async {
        let options = api::parse_server_options(Some(&json!({"listenIp": "127.0.0.1"})), &[]).unwrap();
        let core = MediaServerCore::new(options, events::discard()).unwrap();
        core.create_room(Some(&json!("room")), None).await.unwrap();
        core.add_user(&json!("room"), &json!("producer"), None).await.unwrap();
        let body = json!({"offer": {"type": "offer", "sdp": sdp}});
        let result = core.produce(&json!("room"), &json!("producer"), Some(&body)).await.map(|_| ());
        core.close().await.unwrap();
        result
    })
}

/// Whether a media section of `sdp` has an `a=ssrc-group` naming an SSRC that no `a=ssrc`
/// line of that section declares.
fn undeclared_group_ssrc(sdp: &str) -> bool {
    sdp.split("\nm=").any(|section| {
        let lines: Vec<&str> = section.split('\n').map(|l| l.trim_end_matches('\r')).collect();
        let declared: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("a=ssrc:")).filter_map(|v| v.split(' ').next()).collect();
        lines
            .iter()
            .filter_map(|l| l.strip_prefix("a=ssrc-group:"))
            .flat_map(|v| v.split_whitespace().skip(1))
            .any(|member| !declared.contains(&member))
    })
}

fn expect_answered_or_refused(sdp: &str) {
    // KNOWN BUG (see `regression_undeclared_ssrc_in_a_group_is_invalid_sdp`).
    if undeclared_group_ssrc(sdp) {
        let _ = produce(sdp);
        return;
    }
    if let Err(e) = produce(sdp) {
        assert!(
            matches!(e, SfuError::InvalidSdp(_) | SfuError::InvalidArgument(_)),
            "produce returned {} ({e}) for the offer {sdp:?}",
            e.code()
        );
    }
}

#[test]
fn the_real_offers_are_answered() {
    for (name, offer, _) in corpus::OFFERS {
        if let Err(e) = produce(offer) {
            panic!("{name}: {} ({e})", e.code());
        }
    }
}

proptest! {
    #![proptest_config(config::cases(500))]

    #[test]
    fn produce_never_fails_internally(
        offer in prop_oneof![real_offer().prop_map(|(_, o, _)| o.to_owned()), valid_offer().prop_map(|o| o.text)],
        mutations in prop::collection::vec(mutation(), 0..4),
    ) {
        let text = mutations.iter().fold(offer, |text, m| apply(&text, m));
        expect_answered_or_refused(&text);
    }
}

/// Found by `produce_never_fails_internally` in a 20000-case run: Firefox's offer without the
/// line `a=ssrc:3338787185 cname:...`, so that `a=ssrc-group:FID 3338787185 1283617225` names
/// an SSRC no `a=ssrc` line declares. read_producer_offer accepts it (the section declares
/// 1283617225), webrtc-rs applies it and makes the answer, then set_local_description fails
/// with "no trackStreams found for SSRC" and produce returns INTERNAL ("applying the answer").
/// RFC 5576 section 4.2: the SSRCs of a group are those the media section declares. Fix in
/// sdp.rs (read_producer_offer, e.g. in check_ssrcs): a live section whose a=ssrc-group names
/// an SSRC its a=ssrc lines do not declare is INVALID_SDP.
#[test]
fn regression_undeclared_ssrc_in_a_group_is_invalid_sdp() {
    let offer = corpus::FIREFOX.replace("a=ssrc:3338787185 cname:{1a2b3c4d-5e6f-4788-99aa-bbccddeeff00}\r\n", "");
    assert!(undeclared_group_ssrc(&offer));
    let result = produce(&offer);
    assert_eq!(result.as_ref().map_err(|e| e.code()), Err("INVALID_SDP"), "{result:?}");
}
