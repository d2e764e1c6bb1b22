//! Responses come back byte for byte, up to the store's limit.

use std::sync::Arc;

use idem_core::{DEFAULT_MAX_RESPONSE_BYTES, Error};

use super::env::*;
use crate::{Backend, CaseOutcome};

/// The largest response the suite stores in one case; a store with a higher limit is checked at this size.
const LARGEST_CHECKED: usize = 16 * 1024 * 1024;

/// Bytes that are not UTF-8 and repeat with a period that is not a power of two, so a dropped, doubled or
/// shifted chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|index| (index % 251) as u8 ^ 0xA5).collect()
}

pub(crate) async fn binary_responses_exact(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let responses: [(&str, &[u8]); 6] = [
        ("a single 0x00", &[0x00]),
        ("a single 0xFF", &[0xFF]),
        ("invalid UTF-8", &[0xC3, 0x28, 0xA0, 0xA1, 0xE2, 0x28, 0xA1]),
        ("NUL inside text", b"before\0after\0"),
        ("every byte value", &all_bytes),
        ("trailing zeros", &[0x01, 0x00, 0x00, 0x00]),
    ];

    for (index, (what, response)) in responses.iter().enumerate() {
        let key = key(&format!("binary-{index}"));
        env.finish(&key, &fp(1), response, retain()).await;
        assert_replays(env.begin(&key, &fp(1), long()).await, response, what);
        assert_eq!(&env.completed(&key).await.response, response, "lookup of {what}");
    }
    CaseOutcome::Passed
}

pub(crate) async fn empty_response_exact(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("empty");
    env.finish(&key, &fp(1), b"", retain()).await;

    assert_replays(
        env.begin(&key, &fp(1), long()).await,
        b"",
        "an empty response is a completed record",
    );
    assert!(
        env.completed(&key).await.response.is_empty(),
        "lookup returns the empty response"
    );
    CaseOutcome::Passed
}

pub(crate) async fn max_size_response_exact(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let limit = env.store.max_response_bytes();
    let size = limit.min(LARGEST_CHECKED);
    let response = pattern(size);

    let largest = key("largest");
    env.finish(&largest, &fp(1), &response, retain()).await;
    assert_replays(
        env.begin(&largest, &fp(1), long()).await,
        &response,
        "a response of the store's maximum size",
    );

    if limit >= DEFAULT_MAX_RESPONSE_BYTES {
        let mib = key("one-mib");
        let response = pattern(DEFAULT_MAX_RESPONSE_BYTES);
        env.finish(&mib, &fp(1), &response, retain()).await;
        assert_eq!(
            env.completed(&mib).await.response,
            response,
            "a 1 MiB response comes back byte for byte"
        );
    }
    CaseOutcome::Passed
}

pub(crate) async fn oversized_response_keeps_lease(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let limit = env.store.max_response_bytes();
    if limit >= LARGEST_CHECKED {
        return CaseOutcome::Skipped("the store's response limit is above the 16 MiB the suite sends");
    }
    let key = key("oversized");
    let lease = env.acquire(&key, &fp(1), long()).await;

    match env.store.complete(&lease, &pattern(limit + 1), retain()).await {
        Err(Error::ResponseTooLarge {
            size,
            limit: reported,
        }) => {
            assert_eq!(size, limit + 1, "the error reports the response's size");
            assert_eq!(reported, limit, "the error reports the store's limit");
        }
        other => panic!("a response one byte over the limit must be rejected as too large, got {other:?}"),
    }

    let claim = env.claim(&key).await;
    assert_eq!(
        claim.fencing_token,
        lease.fencing_token(),
        "the lease stays held after a rejected response"
    );
    assert!(claim.is_live(), "the claim stays live");
    assert_in_progress(
        env.begin(&key, &fp(1), long()).await,
        "begin after the rejected response",
    );
    env.store
        .release(&lease)
        .await
        .expect("release after a rejected response must succeed");
    env.assert_absent(&key, "the released key").await;
    CaseOutcome::Passed
}
