//! Several handles, reopening, fencing tokens over a key's life, and claims under capacity pressure.

use std::collections::HashSet;
use std::sync::Arc;

use idem_core::Error;

use super::env::*;
use crate::{Backend, CaseOutcome};

/// Completed records written around held claims in [`claims_survive_many_records`].
const FILL: usize = 300;

pub(crate) async fn handles_share_state(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    if let Some(skip) = skip_unless(
        env.capabilities.shared_across_handles,
        "needs shared_across_handles",
    ) {
        return skip;
    }
    let first = Arc::clone(&env.store);
    let second = env.connect().await;
    let shared = key("shared");

    let lease = acquire_on(&first, &shared, &fp(1), long()).await;
    assert_in_progress(
        begin_on(&second, &shared, &fp(1), long()).await,
        "begin through the second handle",
    );
    assert_eq!(
        claim_on(&second, &shared).await.fencing_token,
        lease.fencing_token(),
        "lookup through the second handle"
    );

    second
        .complete(&lease, b"via second", retain())
        .await
        .expect("complete through the second handle");
    assert_replays(
        begin_on(&first, &shared, &fp(1), long()).await,
        b"via second",
        "begin through the first handle",
    );

    let other = key("shared-release");
    let lease = acquire_on(&second, &other, &fp(1), long()).await;
    first
        .release(&lease)
        .await
        .expect("release through the first handle");
    assert!(
        lookup_on(&second, &other).await.is_none(),
        "the release is seen through the second handle"
    );
    let again = acquire_on(&first, &other, &fp(1), long()).await;
    assert_ne!(
        again.fencing_token(),
        lease.fencing_token(),
        "tokens from two handles never repeat for a key"
    );

    assert!(
        second.delete(&shared).await.expect("delete"),
        "delete through the second handle"
    );
    assert!(
        lookup_on(&first, &shared).await.is_none(),
        "the delete is seen through the first handle"
    );
    CaseOutcome::Passed
}

pub(crate) async fn completed_survives_reopen(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    if let Some(skip) = skip_unless(env.capabilities.durable, "needs durable") {
        return skip;
    }
    let key = key("durable");
    let response = [0x00, 0xFF, 0xC3, 0x28];
    env.finish(&key, &fp(9), &response, retain()).await;
    let env = env.reopen().await;

    assert_replays(
        env.begin(&key, &fp(9), long()).await,
        &response,
        "begin after reopening",
    );
    let record = env.completed(&key).await;
    assert_eq!(record.fingerprint, fp(9), "the fingerprint survives reopening");
    assert_mismatch(
        env.begin(&key, &fp(8), long()).await,
        "begin with another fingerprint after reopening",
    );
    CaseOutcome::Passed
}

pub(crate) async fn fencing_tokens_never_reused(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let key = key("tokens");
    let short = env.short();
    let mut seen = HashSet::new();
    let mut record = |token: u64, how: &str| {
        assert!(
            seen.insert(token),
            "fencing token {token} was issued twice for one key ({how})"
        );
    };

    let lease = env.acquire(&key, &fp(1), long()).await;
    record(lease.fencing_token(), "first claim");
    env.store.release(&lease).await.expect("release");

    let lease = env.acquire(&key, &fp(1), long()).await;
    record(lease.fencing_token(), "after release");
    env.store.delete(&key).await.expect("delete");

    let lease = env.acquire(&key, &fp(1), short).await;
    record(lease.fencing_token(), "after delete");
    env.pass(short).await;

    let lease = env.acquire(&key, &fp(1), long()).await;
    record(lease.fencing_token(), "after a takeover");
    env.complete(&lease, b"x", short).await;
    env.pass(short).await;

    let lease = env.acquire(&key, &fp(1), long()).await;
    record(lease.fencing_token(), "after retention expired");
    env.complete(&lease, b"y", retain()).await;
    env.store.delete(&key).await.expect("delete");

    let lease = env.acquire(&key, &fp(1), long()).await;
    record(lease.fencing_token(), "after delete of a completed record");
    CaseOutcome::Passed
}

pub(crate) async fn fencing_tokens_survive_reopen(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    if let Some(skip) = skip_unless(env.capabilities.durable, "needs durable") {
        return skip;
    }
    let key = key("tokens-reopen");
    let mut seen = HashSet::new();

    let lease = env.acquire(&key, &fp(1), long()).await;
    seen.insert(lease.fencing_token());
    env.store.release(&lease).await.expect("release");
    let lease = env.acquire(&key, &fp(1), long()).await;
    seen.insert(lease.fencing_token());
    env.store.delete(&key).await.expect("delete");
    let env = env.reopen().await;

    for round in 0..3 {
        let lease = env.acquire(&key, &fp(1), long()).await;
        assert!(
            seen.insert(lease.fencing_token()),
            "fencing token {} was issued again after reopening (round {round})",
            lease.fencing_token()
        );
        env.store.delete(&key).await.expect("delete");
    }
    CaseOutcome::Passed
}

pub(crate) async fn claims_survive_many_records(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let short = env.short();
    let lapsing = key("pressure-lapsed");
    let live = key("pressure-live");
    let lapsed_lease = env.acquire(&lapsing, &fp(1), short).await;
    let live_lease = env.acquire(&live, &fp(1), long()).await;

    for index in 0..FILL {
        let filler = key(&format!("filler-{index}"));
        match env.store.begin(&filler, &fp(2), long()).await {
            Ok(idem_core::BeginOutcome::Acquired(lease)) => env.complete(&lease, &[1, 2, 3], retain()).await,
            // A bounded store may reject new claims; it must never make room by dropping held ones.
            Err(Error::StoreFull { .. }) => break,
            other => panic!("begin on a filler key must acquire or report a full store, got {other:?}"),
        }
    }
    env.pass(short).await;

    let claim = env.claim(&live).await;
    assert_eq!(
        claim.fencing_token,
        live_lease.fencing_token(),
        "a live claim must survive {FILL} other records"
    );
    assert!(claim.is_live(), "the live claim must stay live");
    let claim = env.claim(&lapsing).await;
    assert_eq!(
        claim.fencing_token,
        lapsed_lease.fencing_token(),
        "a lapsed claim must survive {FILL} other records"
    );
    env.complete(&lapsed_lease, b"late", retain()).await;
    env.complete(&live_lease, b"live", retain()).await;
    CaseOutcome::Passed
}
