//! Validation of keys, scopes and fingerprints, and the separation of scopes.

use std::sync::Arc;

use idem_core::{Error, Fingerprint, IdempotencyKey, InputField, MAX_FINGERPRINT_BYTES};

use super::env::*;
use crate::{Backend, CaseOutcome};

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, Error>, expected: InputField, what: &str) {
    match result {
        Err(Error::InvalidInput { field, .. }) => {
            assert_eq!(field, expected, "{what}: the error must name the {expected}")
        }
        other => panic!("{what}: expected invalid input on the {expected}, got {other:?}"),
    }
}

pub(crate) async fn key_length_counts_bytes(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    // 127 two-byte characters and one ASCII byte: 128 characters, 255 bytes.
    let two_byte = "é".repeat(127) + "a";
    // 63 four-byte characters and three ASCII bytes: 66 characters, 255 bytes.
    let four_byte = "😀".repeat(63) + "abc";
    assert_eq!(two_byte.len(), 255);
    assert_eq!(four_byte.len(), 255);

    let keys = [
        IdempotencyKey::unscoped(two_byte.clone()).expect("a 255-byte key is valid"),
        IdempotencyKey::new(SCOPE, four_byte.clone()).expect("a 255-byte key is valid"),
        IdempotencyKey::new(two_byte.clone(), four_byte.clone()).expect("a 255-byte scope and key are valid"),
    ];
    for (index, key) in keys.iter().enumerate() {
        let response = [index as u8];
        env.finish(key, &fp(1), &response, retain()).await;
        assert_replays(
            env.begin(key, &fp(1), long()).await,
            &response,
            "begin on a 255-byte multibyte key",
        );
    }
    // Differs from the first key only in its last byte: a backend that truncates keys would merge them.
    let neighbour = IdempotencyKey::unscoped("é".repeat(127) + "b").expect("valid");
    env.assert_absent(&neighbour, "a 255-byte key that differs only in its last byte")
        .await;

    let over_two = "é".repeat(128);
    let over_four = "😀".repeat(64);
    assert_eq!(over_two.len(), 256);
    assert_eq!(over_four.len(), 256);
    assert_invalid(
        IdempotencyKey::unscoped(over_two.clone()),
        InputField::Key,
        "a 256-byte key of 2-byte characters",
    );
    assert_invalid(
        IdempotencyKey::unscoped(over_four.clone()),
        InputField::Key,
        "a 256-byte key of 4-byte characters",
    );
    assert_invalid(
        IdempotencyKey::new(over_two, "k"),
        InputField::Scope,
        "a 256-byte scope",
    );
    assert_invalid(
        IdempotencyKey::new(over_four, "k"),
        InputField::Scope,
        "a 256-byte scope",
    );
    assert_invalid(IdempotencyKey::new(SCOPE, ""), InputField::Key, "an empty key");
    assert!(IdempotencyKey::new("", "k").is_ok(), "an empty scope is valid");

    env.assert_absent(
        &IdempotencyKey::unscoped("é".repeat(127)).expect("valid"),
        "a prefix of a rejected key",
    )
    .await;
    CaseOutcome::Passed
}

pub(crate) async fn control_characters_rejected(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    for bad in ["a\nb", "\0", "tab\there", "del\u{7f}", "c1\u{85}", "end\r"] {
        assert_invalid(
            IdempotencyKey::unscoped(bad),
            InputField::Key,
            &format!("key {bad:?}"),
        );
        assert_invalid(
            IdempotencyKey::new(bad, "k"),
            InputField::Scope,
            &format!("scope {bad:?}"),
        );
    }
    // Characters that are not control characters stay valid and distinct.
    let spaced = IdempotencyKey::unscoped("a b").expect("a space is valid");
    let unicode =
        IdempotencyKey::unscoped("a\u{2028}b").expect("a line separator is not a control character");
    env.finish(&spaced, &fp(1), b"space", retain()).await;
    env.assert_absent(&unicode, "a key that differs in one character")
        .await;
    env.assert_absent(
        &IdempotencyKey::unscoped("ab").expect("valid"),
        "a key without the rejected character",
    )
    .await;
    CaseOutcome::Passed
}

pub(crate) async fn fingerprint_limit_is_64_bytes(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    assert_eq!(MAX_FINGERPRINT_BYTES, 64);
    assert_invalid(
        Fingerprint::new(vec![7u8; 65]),
        InputField::Fingerprint,
        "a 65-byte fingerprint",
    );

    let full = Fingerprint::new((0u8..64).collect::<Vec<u8>>()).expect("a 64-byte fingerprint is valid");
    let key = key("fp-64");
    env.acquire(&key, &full, long()).await;
    assert_eq!(
        env.claim(&key).await.fingerprint,
        full,
        "a 64-byte fingerprint is stored byte for byte"
    );

    // Fingerprints that differ only in their last byte, or are all 0x00 and all 0xFF, never match.
    let mut last = (0u8..64).collect::<Vec<u8>>();
    last[63] = 0xFF;
    let last = Fingerprint::new(last).expect("valid");
    assert_mismatch(
        env.begin(&key, &last, long()).await,
        "a fingerprint that differs in its 64th byte",
    );
    let zeros = claim_with(&env, "fp-zeros", 0x00).await;
    assert_mismatch(
        env.begin(&zeros, &fp(0xFF), long()).await,
        "all-0xFF fingerprint on an all-0x00 claim",
    );
    CaseOutcome::Passed
}

async fn claim_with(env: &Env, name: &str, byte: u8) -> IdempotencyKey {
    let key = key(name);
    env.acquire(&key, &fp(byte), long()).await;
    key
}

pub(crate) async fn scopes_are_isolated(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let a = IdempotencyKey::new("tenant-a", "order-1").expect("valid");
    let b = IdempotencyKey::new("tenant-b", "order-1").expect("valid");
    let unscoped = IdempotencyKey::unscoped("order-1").expect("valid");

    let lease_a = env.acquire(&a, &fp(1), long()).await;
    let lease_b = env.acquire(&b, &fp(2), long()).await;
    env.acquire(&unscoped, &fp(3), long()).await;
    // Fencing tokens are unique per key only, so two scopes may hold equal tokens; each claim must still
    // carry its own lease's token.
    assert_eq!(
        env.claim(&a).await.fencing_token,
        lease_a.fencing_token(),
        "scope a's claim carries scope a's token"
    );
    assert_eq!(
        env.claim(&b).await.fencing_token,
        lease_b.fencing_token(),
        "scope b's claim carries scope b's token"
    );

    env.complete(&lease_a, b"from a", retain()).await;
    assert_in_progress(
        env.begin(&b, &fp(2), long()).await,
        "scope b after scope a completed",
    );
    assert_replays(env.begin(&a, &fp(1), long()).await, b"from a", "scope a");

    assert!(env.store.delete(&b).await.expect("delete"), "delete in scope b");
    assert_eq!(
        env.completed(&a).await.response,
        b"from a",
        "delete in one scope leaves the other"
    );
    assert_eq!(
        env.claim(&unscoped).await.fingerprint,
        fp(3),
        "the empty scope is its own scope"
    );
    CaseOutcome::Passed
}

pub(crate) async fn scope_key_split_is_distinct(backend: Arc<dyn Backend>) -> CaseOutcome {
    let env = Env::open(&backend).await;
    let splits = [
        ("ab", "c"),
        ("a", "bc"),
        ("", "abc"),
        ("abc", "x"),
        ("1:a", "bc"),
        ("2:ab", "c"),
        ("a:", "bc"),
    ];
    let keys: Vec<IdempotencyKey> = splits
        .iter()
        .map(|(scope, key)| IdempotencyKey::new(*scope, *key).expect("valid"))
        .collect();

    for (index, key) in keys.iter().enumerate() {
        let lease = env.acquire(key, &fp(1), long()).await;
        env.complete(&lease, &[index as u8], retain()).await;
    }
    for (index, key) in keys.iter().enumerate() {
        assert_replays(
            env.begin(key, &fp(1), long()).await,
            &[index as u8],
            &format!("scope {:?} with key {:?}", splits[index].0, splits[index].1),
        );
    }
    CaseOutcome::Passed
}
