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

fn expect_answered_or_refused(sdp: &str) {
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
