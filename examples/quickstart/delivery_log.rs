//! The delivery log: which webhook deliveries arrive at which moment, built from a fixed seed.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::payloads::{PAYLOADS, event_body};

/// The seed of the log. Another seed gives another log with the same mix of cases.
pub(crate) const SEED: u64 = 0x1de3_5eed;
/// Deliveries sent at the same moment are handed to this many workers, one delivery each.
pub(crate) const WORKERS: usize = 8;

const EVENTS: usize = 300;
const INSTALLATIONS: u64 = 20;
const FIRST_INSTALLATION_ID: u64 = 41_000_001;
const NEW_EVENTS_PER_MOMENT: usize = 2;
const MISMATCHES: usize = 6;

/// One webhook event: what GitHub sends, and how the example's handler treats it.
pub(crate) struct Event {
    /// The GUID of the `X-GitHub-Delivery` header; a redelivery repeats it. The idempotency key.
    pub(crate) delivery_id: String,
    /// The `X-GitHub-Event` header.
    pub(crate) event_type: &'static str,
    /// The payload file the body was built from.
    pub(crate) file: &'static str,
    pub(crate) body: Arc<[u8]>,
    /// Hex SHA-256 of the body, as the ledger records it.
    pub(crate) body_sha256: String,
    /// Whether the handler returns an error the first time it runs this body, like a downstream service that
    /// returns 503 once.
    pub(crate) fails_first_try: bool,
}

/// One delivery: the delivery id of `event`, carrying the body of `body_of`. The two differ only for the
/// deliveries that reuse an id with another body.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Delivery {
    /// Position in the log, counted over all moments.
    pub(crate) sequence: usize,
    pub(crate) event: usize,
    pub(crate) body_of: usize,
}

/// Counts of each case in the log, taken while building it. The expected outcome counts come from a
/// separate model.
#[derive(Debug, Default)]
pub(crate) struct Composition {
    /// Events whose first delivery is sent several times at the same moment.
    pub(crate) concurrent_events: usize,
    /// Copies sent beside the first delivery at the same moment.
    pub(crate) concurrent_copies: usize,
    /// Events whose handler fails on the first try.
    pub(crate) failing_events: usize,
    /// Deliveries sent again at a later moment (redeliveries after a failure included).
    pub(crate) later_retries: usize,
    /// Deliveries that reuse a delivery id with another event's body.
    pub(crate) reused_ids: usize,
}

/// The whole log: the events, and the deliveries grouped by the moment they are sent.
pub(crate) struct DeliveryLog {
    pub(crate) seed: u64,
    pub(crate) events: Vec<Event>,
    /// Deliveries of one moment are sent together, at most [`WORKERS`] of them.
    pub(crate) moments: Vec<Vec<Delivery>>,
    pub(crate) composition: Composition,
}

impl DeliveryLog {
    /// Returns the number of deliveries over all moments.
    pub(crate) fn len(&self) -> usize {
        self.moments.iter().map(Vec::len).sum()
    }

    /// Builds the log of `seed`.
    ///
    /// Two new events start per moment, or later when the moment is full. An event's first delivery is
    /// sometimes sent as 2 to 4 copies at once. An event that fails on the first try is redelivered 1 to 4
    /// moments later. Then each event gets 0 to 4 plain retries, each 1 to 6 moments after its previous
    /// delivery. At the end, a few delivery ids are reused with the body of another event, 1 to 6 moments
    /// after the event of that id executed.
    pub(crate) fn build(seed: u64) -> Result<Self, String> {
        let mut random = SplitMix64::new(seed);
        let events = build_events(seed, &mut random)?;
        let mut schedule = Schedule::default();
        let mut composition = Composition::default();
        let mut executed_at = Vec::with_capacity(events.len());

        for (index, event) in events.iter().enumerate() {
            let copies = if event.fails_first_try || random.below(10) >= 3 {
                1
            } else {
                2 + random.below(3) as usize
            };
            if copies > 1 {
                composition.concurrent_events += 1;
                composition.concurrent_copies += copies - 1;
            }

            let mut at = schedule.place(index / NEW_EVENTS_PER_MOMENT, index, index, copies);
            if event.fails_first_try {
                composition.failing_events += 1;
                composition.later_retries += 1;
                at = schedule.place(at + 1 + random.below(4) as usize, index, index, 1);
            }
            executed_at.push(at);

            for _ in 0..random.below(5) {
                composition.later_retries += 1;
                at = schedule.place(at + 1 + random.below(6) as usize, index, index, 1);
            }
        }

        for _ in 0..MISMATCHES {
            let target = random.below(events.len() as u64) as usize;
            let donor = (target + 1 + random.below(events.len() as u64 - 1) as usize) % events.len();
            composition.reused_ids += 1;
            schedule.place(
                executed_at[target] + 1 + random.below(6) as usize,
                target,
                donor,
                1,
            );
        }

        let moments = schedule.finish(&mut random);
        Ok(Self {
            seed,
            events,
            moments,
            composition,
        })
    }
}

/// Picks [`EVENTS`] distinct (payload file, installation) pairs, so that every event has its own body.
fn build_events(seed: u64, random: &mut SplitMix64) -> Result<Vec<Event>, String> {
    let mut pairs: Vec<(usize, u64)> = (0..PAYLOADS.len())
        .flat_map(|payload| (0..INSTALLATIONS).map(move |installation| (payload, installation)))
        .collect();
    random.shuffle(&mut pairs);
    pairs.truncate(EVENTS);

    let mut events = Vec::with_capacity(pairs.len());
    for (index, (payload, installation)) in pairs.into_iter().enumerate() {
        let payload = &PAYLOADS[payload];
        let body = event_body(payload, FIRST_INSTALLATION_ID + installation)?;
        events.push(Event {
            delivery_id: delivery_guid(seed, index),
            event_type: payload.event_type,
            file: payload.file,
            body_sha256: hex::encode(Sha256::digest(&body)),
            body: body.into(),
            fails_first_try: random.below(100) < 8,
        });
    }
    Ok(events)
}

/// Derives a GUID in the form of `X-GitHub-Delivery` (8-4-4-4-12 hex digits) from SHA-256 of the seed and the
/// event's index, so that every run of one seed uses the same ids.
fn delivery_guid(seed: u64, index: usize) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"idem quickstart delivery");
    hasher.update(seed.to_be_bytes());
    hasher.update((index as u64).to_be_bytes());
    let digits = hex::encode(&hasher.finalize()[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &digits[..8],
        &digits[8..12],
        &digits[12..16],
        &digits[16..20],
        &digits[20..]
    )
}

/// Moments being filled, each with room for [`WORKERS`] deliveries.
#[derive(Default)]
struct Schedule {
    moments: Vec<Vec<(usize, usize)>>,
}

impl Schedule {
    /// Places `copies` deliveries of `event` with the body of `body_of` at the first moment at or after
    /// `earliest` that has room for all of them, and returns that moment.
    fn place(&mut self, earliest: usize, event: usize, body_of: usize, copies: usize) -> usize {
        let mut moment = earliest;
        loop {
            if moment >= self.moments.len() {
                self.moments.resize_with(moment + 1, Vec::new);
            }
            if self.moments[moment].len() + copies <= WORKERS {
                self.moments[moment].extend(std::iter::repeat_n((event, body_of), copies));
                return moment;
            }
            moment += 1;
        }
    }

    /// Shuffles each moment, drops empty ones and numbers the deliveries in log order.
    fn finish(self, random: &mut SplitMix64) -> Vec<Vec<Delivery>> {
        let mut sequence = 0;
        let mut moments = Vec::with_capacity(self.moments.len());
        for mut moment in self.moments.into_iter().filter(|moment| !moment.is_empty()) {
            random.shuffle(&mut moment);
            let deliveries = moment
                .into_iter()
                .map(|(event, body_of)| {
                    sequence += 1;
                    Delivery {
                        sequence,
                        event,
                        body_of,
                    }
                })
                .collect();
            moments.push(deliveries);
        }
        moments
    }
}

/// SplitMix64, a small PRNG whose output depends only on the seed, so the log never changes with a crate
/// version.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Returns a number in `0..bound`. The modulo bias is far below anything this example can notice.
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    /// Fisher-Yates shuffle.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for last in (1..items.len()).rev() {
            let pick = self.below(last as u64 + 1) as usize;
            items.swap(last, pick);
        }
    }
}
