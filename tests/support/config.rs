//! How long the property tests run: a bounded number of cases in `cargo test`, as many as
//! `PROPTEST_CASES` says when it is set (e.g. `PROPTEST_CASES=200000` for a long run by hand).

#![allow(dead_code)]

use proptest::test_runner::Config;

/// `default` cases unless `PROPTEST_CASES` is set; every other knob as proptest's defaults
/// (which read their own `PROPTEST_*` variables).
pub fn cases(default: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default;
    }
    config
}
