//! The one list of cases, and the macros generated from it.

/// Lists every case once, with its rule as documentation, and hands the list to one of two expansions.
/// `registry` builds [`crate::CASES`] and the public functions of [`crate::cases`] inside this crate.
/// `tests` builds one `#[test]` per case in the crate that calls [`crate::conformance_tests!`]. So the
/// registry, the public functions and the generated tests cannot drift apart.
#[doc(hidden)]
#[macro_export]
macro_rules! __idem_conformance_cases {
    ($mode:ident $args:tt) => {
        $crate::__idem_conformance_cases! { @expand $mode $args
            /// A begin on a key without a record acquires a lease at attempt 1 with the begin's key,
            /// fingerprint and TTL; lookup then reports a live claim with that fencing token.
            begin_acquires_fresh_key,
            /// A begin with the same fingerprint on a live claim is in progress, with the attempt of the
            /// claim and the time until its lease deadline, and changes nothing.
            begin_in_progress_on_live_claim,
            /// A begin with the same fingerprint on a completed record within retention replays it: the
            /// response byte for byte, the fingerprint, and the remaining retention.
            begin_replays_completed,
            /// A begin with another fingerprint on a live claim is a fingerprint mismatch and changes nothing.
            begin_mismatch_on_live_claim,
            /// A begin with another fingerprint on a lapsed claim is a fingerprint mismatch, not a takeover,
            /// and changes nothing: the holder can still complete it.
            begin_mismatch_on_lapsed_claim,
            /// A begin with another fingerprint on a completed record is a fingerprint mismatch, not a
            /// replay, and changes nothing.
            begin_mismatch_on_completed,
            /// The empty fingerprint matches only another empty one.
            empty_fingerprint_matches_only_empty,
            /// A completed record is replayed after the deadline of the lease that completed it: completed
            /// beats a takeover.
            completed_ignores_lease_deadline,
            /// A begin with the same fingerprint on a lapsed claim takes it over: a new fencing token,
            /// attempt + 1, and a live claim again. A second lapse and takeover makes attempt 3.
            takeover_of_lapsed_claim,
            /// After a takeover, complete with the old lease is lease lost and changes nothing, also after
            /// the new lease completed with the same response.
            stale_lease_cannot_complete,
            /// After a takeover, release with the old lease is lease lost and leaves the new claim in place.
            stale_lease_cannot_release,
            /// After a takeover, renew with the old lease is lease lost and does not move the new lease's
            /// deadline.
            stale_lease_cannot_renew,
            /// A lease whose fencing token the store never issued for the key cannot complete, renew or
            /// release a claim, and complete or renew never create a record.
            unknown_token_is_lease_lost,
            /// The holder of a lapsed claim that nobody took over can still complete it.
            complete_own_lapsed_claim,
            /// Repeating a successful complete with the same lease and response succeeds and changes
            /// nothing: neither the response nor the retention deadline nor the completion time.
            complete_repeat_same_response,
            /// Repeating a complete with the same lease and another response is lease lost and keeps the
            /// first response.
            complete_repeat_other_response,
            /// After release, complete and renew with the released lease are lease lost and create no record.
            complete_after_release_is_lost,
            /// After delete, complete with the old lease is lease lost, also once the key is claimed again.
            complete_after_delete_is_lost,
            /// Release removes the claim, so the next begin acquires a new record at attempt 1 with a new
            /// fencing token, with any fingerprint.
            release_lets_begin_acquire,
            /// Release succeeds when the record is already gone: released before, or deleted.
            release_of_gone_record_is_ok,
            /// Release after the lease completed is lease lost and keeps the completed record.
            release_after_complete_is_lost,
            /// Renew moves the lease deadline to a whole TTL from now, returns the remaining time, and keeps
            /// token and attempt. The claim stays in progress past its original deadline.
            renew_extends_lease,
            /// Renew follows the fencing rule of complete: the holder of a lapsed claim that nobody took
            /// over can renew it, and the claim is live again.
            renew_revives_own_lapsed_claim,
            /// Renew after the lease completed is lease lost and keeps the completed record.
            renew_after_complete_is_lost,
            /// Lookup of a live claim reports its fingerprint, fencing token, attempt, remaining lease time
            /// and age.
            lookup_live_claim,
            /// Lookup of a lapsed claim reports it with zero remaining lease time.
            lookup_lapsed_claim,
            /// Lookup of a completed record reports its fingerprint, response, remaining retention and age.
            lookup_completed,
            /// Lookup of a key that was never used returns nothing.
            lookup_absent_key,
            /// A completed record past its retention is gone: lookup returns nothing, and a begin acquires a
            /// new record at attempt 1 with a fencing token never used for the key.
            retention_expiry_frees_key,
            /// A claim lapses at its deadline instant. 1 ms before, it is in progress with 1 ms left. At the
            /// deadline, no time remains and a begin takes it over.
            lease_expires_at_deadline,
            /// A completed record expires at its retention deadline instant. 1 ms before, it is replayed
            /// with 1 ms left. At the deadline, lookup returns nothing and a begin acquires.
            retention_expires_at_deadline,
            /// A lapsed claim stays through its grace period and disappears at its end; purge counts it, and
            /// its old lease can no longer complete.
            lapsed_claim_disappears_after_grace,
            /// Delete removes a claim or a completed record and returns true, returns false for an absent
            /// key, and a claim after delete gets a new fencing token.
            delete_removes_any_record,
            /// Purge removes completed records past retention and returns how many, or 0 for a backend that
            /// expires records by itself. It keeps records within retention, live claims and lapsed claims
            /// within their grace period.
            purge_counts_expired,
            /// A zero TTL is invalid input on the TTL in every form, never "forever"; a TTL above Ttl::MAX is
            /// rejected without overflow.
            zero_ttl_rejected,
            /// Ttl::MAX works as lease and retention TTL without overflow: begin, renew after 50 years,
            /// complete, and a replay 99 years later.
            max_ttl_works,
            /// Key and scope limits count UTF-8 bytes. Keys and scopes of 255 bytes of 2- and 4-byte
            /// characters work end to end and stay distinct. 256 bytes are invalid input naming the key or
            /// scope, an empty key is invalid, and rejected keys store nothing.
            key_length_counts_bytes,
            /// Control characters in a key or scope are invalid input naming which; other characters stay
            /// valid and distinct.
            control_characters_rejected,
            /// A fingerprint of 65 bytes is invalid input; 64 bytes are stored byte for byte, and
            /// fingerprints that differ in one byte never match.
            fingerprint_limit_is_64_bytes,
            /// The same key string in two scopes, or in no scope, addresses three independent records.
            scopes_are_isolated,
            /// Different (scope, key) splits of the same characters, such as ("ab", "c") and ("a", "bc"),
            /// address different records.
            scope_key_split_is_distinct,
            /// Binary responses (0x00, 0xFF, invalid UTF-8, NUL inside text, every byte value) are replayed
            /// and looked up byte for byte.
            binary_responses_exact,
            /// An empty response is a completed record that replays as empty.
            empty_response_exact,
            /// A response of the store's maximum size (up to 16 MiB), and 1 MiB when the limit allows, come
            /// back byte for byte.
            max_size_response_exact,
            /// A response one byte over the store's limit is rejected as too large with its size and the
            /// limit, the lease stays held, and release then frees the key.
            oversized_response_keeps_lease,
            /// No bound or eviction drops a claim: a live and a lapsed claim survive 300 completed records
            /// written around them (a bounded store may reject new claims as full instead).
            claims_survive_many_records,
            /// Of 64 concurrent begins on a fresh key, exactly one acquires and the others are in progress.
            concurrent_begin_one_winner,
            /// Of 64 concurrent begins on a lapsed claim, exactly one takes it over (attempt 2) and the
            /// others are in progress.
            concurrent_takeover_one_winner,
            /// Of 64 concurrent begins on a completed record past retention, exactly one acquires.
            concurrent_reacquire_one_winner,
            /// Of 64 concurrent begins spread over four handles on one backend, exactly one acquires, on a
            /// fresh key and on a lapsed claim.
            concurrent_begin_across_handles,
            /// Several handles on one backend see one state: claims, completions, releases and deletes made
            /// through one are seen through the other, and fencing tokens never repeat between them.
            handles_share_state,
            /// A completed record survives dropping every handle and opening the store again.
            completed_survives_reopen,
            /// Fencing tokens are never reused for a key: after release, delete, takeover, retention expiry
            /// and delete of a completed record, each new lease has a new token.
            fencing_tokens_never_reused,
            /// Fencing tokens are never reused for a key after the store is reopened, also when the key's
            /// record was deleted before.
            fencing_tokens_survive_reopen,
        }
    };

    (@expand registry () $( $(#[doc = $rule:literal])+ $name:ident, )* ) => {
        /// The public entry of each case: one `async fn` per case, documented with the rule it checks.
        ///
        /// Each opens its own store with [`crate::Backend::open`], panics when a check fails, and returns
        /// [`crate::CaseOutcome::Skipped`] when the harness lacks a capability the case needs.
        pub mod cases {
            use std::sync::Arc;

            use $crate::{Backend, CaseOutcome};

            $(
                $(#[doc = $rule])+
                pub async fn $name(backend: Arc<dyn Backend>) -> CaseOutcome {
                    $crate::checks::$name(backend).await
                }
            )*
        }

        /// Every case, in a stable order: name, rule and entry point.
        pub static CASES: &[Case] = &[
            $(
                Case {
                    name: stringify!($name),
                    rule: concat!($($rule),+),
                    start: |backend| Box::pin(cases::$name(backend)),
                },
            )*
        ];
    };

    (@expand tests ($backend:ident, $factory:expr) $( $(#[doc = $rule:literal])+ $name:ident, )* ) => {
        #[allow(unused_imports)]
        mod $backend {
            use super::*;

            $(
                #[test]
                fn $name() {
                    $crate::__run_test(stringify!($name), $factory);
                }
            )*
        }
    };
}

/// Generates one `#[test]` per conformance case for a backend, in a module named after the backend.
///
/// The first argument names the module, so `cargo test -- --list` shows `memory::begin_acquires_fresh_key`
/// and the like, and each case passes or fails by its own name. The second is a closure that returns a
/// future of a fresh harness. It runs once per case, inside the case's own multi-threaded Tokio runtime
/// (4 worker threads), so it may open connections. A case that needs a capability the harness lacks passes
/// and prints why it was skipped.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use idem_conformance::{Backend, Capabilities};
/// # struct MyHarness;
/// # impl MyHarness { fn new() -> Self { MyHarness } }
/// # #[idem_conformance::async_trait]
/// # impl Backend for MyHarness {
/// #     fn capabilities(&self) -> Capabilities { Capabilities::new() }
/// #     async fn open(&self) -> Result<Arc<dyn idem_core::IdempotencyStore>, idem_core::BoxError> { todo!() }
/// # }
/// idem_conformance::conformance_tests!(my_store, || async { MyHarness::new() });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($backend:ident, $factory:expr $(,)?) => {
        $crate::__idem_conformance_cases! { tests ($backend, $factory) }
    };
}
