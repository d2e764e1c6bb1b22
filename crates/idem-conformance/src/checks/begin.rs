//! The four begin outcomes and their precedence.

use std::sync::Arc;
use std::time::Duration;

use idem_core::{BeginOutcome, Fingerprint};

use super::env::*;
use crate::{Backend, CaseOutcome};

pub(crate) async fn begin_acquires_fresh_key(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("fresh");
    let lease = env.acquire(&key, &fp(1), long()).await;

    assert_eq!(lease.key(), &key, "the lease must name its key");
    assert_eq!(
        lease.fingerprint(),
        &fp(1),
        "the lease must carry the begin's fingerprint"
    );
    assert_eq!(lease.attempt(), 1, "the first lease on a record is attempt 1");
    assert_eq!(lease.ttl(), long(), "the lease must carry the begin's TTL");

    let claim = env.claim(&key).await;
    assert_eq!(
        claim.fencing_token,
        lease.fencing_token(),
        "the claim must carry the lease's fencing token"
    );
    assert_eq!(claim.attempt, 1, "the claim must be attempt 1");
    assert_eq!(
        claim.fingerprint,
        fp(1),
        "the claim must carry the begin's fingerprint"
    );
    assert!(claim.is_live(), "a claim before its deadline is live");
    assert!(
        claim.lease_remaining <= long().as_duration(),
        "remaining lease time cannot exceed the TTL"
    );
    if env.exact() {
        assert_eq!(
            claim.lease_remaining,
            long().as_duration(),
            "no time passed, so the whole TTL remains"
        );
        assert_eq!(
            claim.age,
            Duration::ZERO,
            "no time passed since the claim was made"
        );
    }
    CaseOutcome::Passed
}

pub(crate) async fn begin_in_progress_on_live_claim(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("live");
    let lease = env.acquire(&key, &fp(1), long()).await;
    env.advance(Duration::from_secs(7));

    let (retry_after, attempt) = assert_in_progress(env.begin(&key, &fp(1), long()).await, "second begin");
    assert_eq!(
        attempt, 1,
        "in progress must report the attempt of the live claim"
    );
    assert!(
        !retry_after.is_zero(),
        "retry-after of a live claim is above zero"
    );
    assert!(
        retry_after <= long().as_duration(),
        "retry-after cannot exceed the claim's TTL"
    );
    if env.exact() {
        assert_eq!(
            retry_after,
            long().as_duration() - Duration::from_secs(7),
            "retry-after is the time until the claim's lease deadline"
        );
    }

    let claim = env.claim(&key).await;
    assert_eq!(
        claim.fencing_token,
        lease.fencing_token(),
        "an in-progress begin must not change the claim's token"
    );
    assert_eq!(
        claim.attempt, 1,
        "an in-progress begin must not change the attempt"
    );
    if env.exact() {
        assert_eq!(
            claim.lease_remaining, retry_after,
            "an in-progress begin must not move the lease deadline"
        );
    }
    CaseOutcome::Passed
}

pub(crate) async fn begin_replays_completed(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("done");
    env.finish(&key, &fp(1), b"first result", retain()).await;
    env.advance(Duration::from_secs(30));

    match env.begin(&key, &fp(1), long()).await {
        BeginOutcome::Completed(record) => {
            assert_eq!(
                record.response, b"first result",
                "the replay must carry the stored response"
            );
            assert_eq!(
                record.fingerprint,
                fp(1),
                "the replay must carry the stored fingerprint"
            );
            assert!(
                !record.retention_remaining.is_zero(),
                "a replayed record is within retention"
            );
            assert!(
                record.retention_remaining <= retain().as_duration(),
                "remaining retention cannot exceed it"
            );
            if env.exact() {
                assert_eq!(
                    record.retention_remaining,
                    retain().as_duration() - Duration::from_secs(30),
                    "remaining retention counts from the completion"
                );
                assert_eq!(
                    record.age,
                    Duration::from_secs(30),
                    "age counts from the completion"
                );
            }
        }
        other => panic!("begin on a completed key must replay it, got {other:?}"),
    }
    CaseOutcome::Passed
}

pub(crate) async fn begin_mismatch_on_live_claim(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("live");
    let lease = env.acquire(&key, &fp(1), long()).await;

    assert_mismatch(
        env.begin(&key, &fp(2), long()).await,
        "begin with another fingerprint on a live claim",
    );

    let claim = env.claim(&key).await;
    assert_eq!(
        claim.fingerprint,
        fp(1),
        "a mismatch must not change the fingerprint"
    );
    assert_eq!(
        claim.fencing_token,
        lease.fencing_token(),
        "a mismatch must not change the token"
    );
    assert_eq!(claim.attempt, 1, "a mismatch must not change the attempt");
    assert_in_progress(
        env.begin(&key, &fp(1), long()).await,
        "begin with the claim's fingerprint",
    );
    CaseOutcome::Passed
}

pub(crate) async fn begin_mismatch_on_lapsed_claim(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("lapsed");
    let short = env.short();
    let lease = env.acquire(&key, &fp(1), short).await;
    env.pass(short).await;

    assert_mismatch(
        env.begin(&key, &fp(2), long()).await,
        "begin with another fingerprint on a lapsed claim (a mismatch beats a takeover)",
    );

    let claim = env.claim(&key).await;
    assert_eq!(
        claim.fingerprint,
        fp(1),
        "a mismatch must not change the fingerprint"
    );
    assert_eq!(
        claim.fencing_token,
        lease.fencing_token(),
        "a mismatch must not take the claim over"
    );
    assert_eq!(claim.attempt, 1, "a mismatch must not count as an attempt");
    assert!(!claim.is_live(), "a mismatch must not revive the lapsed claim");
    env.complete(&lease, b"late", retain()).await;
    CaseOutcome::Passed
}

pub(crate) async fn begin_mismatch_on_completed(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("done");
    env.finish(&key, &fp(1), b"result", retain()).await;

    assert_mismatch(
        env.begin(&key, &fp(2), long()).await,
        "begin with another fingerprint on a completed record (a mismatch beats a replay)",
    );

    let record = env.completed(&key).await;
    assert_eq!(
        record.fingerprint,
        fp(1),
        "a mismatch must not change the fingerprint"
    );
    assert_eq!(
        record.response, b"result",
        "a mismatch must not change the response"
    );
    assert_replays(
        env.begin(&key, &fp(1), long()).await,
        b"result",
        "begin with the stored fingerprint",
    );
    CaseOutcome::Passed
}

pub(crate) async fn empty_fingerprint_matches_only_empty(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let empty = Fingerprint::empty();
    let zero = Fingerprint::new(vec![0u8]).expect("one byte is a valid fingerprint");

    let first = key("empty-first");
    env.acquire(&first, &empty, long()).await;
    assert_mismatch(
        env.begin(&first, &zero, long()).await,
        "begin with [0x00] on an empty-fingerprint claim",
    );
    assert_in_progress(
        env.begin(&first, &empty, long()).await,
        "begin with the empty fingerprint again",
    );

    let second = key("zero-first");
    env.acquire(&second, &zero, long()).await;
    assert_mismatch(
        env.begin(&second, &empty, long()).await,
        "begin with the empty fingerprint on a [0x00] claim",
    );

    let third = key("empty-done");
    env.finish(&third, &empty, b"r", retain()).await;
    assert_replays(
        env.begin(&third, &empty, long()).await,
        b"r",
        "begin with the empty fingerprint on its record",
    );
    assert_mismatch(
        env.begin(&third, &fp(0), long()).await,
        "begin with zeros on an empty-fingerprint record",
    );
    CaseOutcome::Passed
}

pub(crate) async fn completed_ignores_lease_deadline(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("done-short-lease");
    let short = env.short();
    let lease = env.acquire(&key, &fp(1), short).await;
    env.complete(&lease, b"kept", retain()).await;
    env.pass(short).await;

    assert_replays(
        env.begin(&key, &fp(1), long()).await,
        b"kept",
        "a completed record past its old lease deadline (completed beats a takeover)",
    );
    let record = env.completed(&key).await;
    assert_eq!(record.response, b"kept", "the record must stay completed");
    CaseOutcome::Passed
}

pub(crate) async fn takeover_of_lapsed_claim(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("takeover");
    let short = env.short();
    let first = env.acquire(&key, &fp(1), short).await;
    env.pass(short).await;

    let second = env.acquire(&key, &fp(1), short).await;
    assert_eq!(second.attempt(), 2, "a takeover is the next attempt");
    assert_ne!(
        second.fencing_token(),
        first.fencing_token(),
        "a takeover gets a new fencing token"
    );
    let claim = env.claim(&key).await;
    assert_eq!(
        claim.fencing_token,
        second.fencing_token(),
        "the claim must carry the new token"
    );
    assert_eq!(claim.attempt, 2, "the claim must count the takeover");
    assert!(claim.is_live(), "the taken-over claim is live again");
    let (_, attempt) = assert_in_progress(env.begin(&key, &fp(1), long()).await, "begin after the takeover");
    assert_eq!(attempt, 2, "in progress reports the attempt of the new claim");

    env.pass(short).await;
    let third = env.acquire(&key, &fp(1), long()).await;
    assert_eq!(third.attempt(), 3, "a second takeover is attempt 3");
    assert_ne!(
        third.fencing_token(),
        first.fencing_token(),
        "tokens are never reused for a key"
    );
    assert_ne!(
        third.fencing_token(),
        second.fencing_token(),
        "tokens are never reused for a key"
    );
    CaseOutcome::Passed
}
