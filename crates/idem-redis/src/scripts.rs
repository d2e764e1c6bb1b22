//! The Lua scripts behind every store operation, and the decoding of their replies.
//!
//! Each operation that reads and then writes is one script, so Redis runs it atomically. Scripts are sent by
//! hash (`EVALSHA`); the redis crate's [`Script`] loads a script again when the server replies `NOSCRIPT`,
//! as it does after a restart. On Redis Cluster the load goes to every node.
//!
//! # Record layout, version 1
//!
//! One hash per idempotency key, at `<prefix>{<hex digest>}`:
//!
//! | field | meaning |
//! | --- | --- |
//! | `v` | layout version, `1` |
//! | `s` | state: `p` in progress, `c` completed, `x` removed (a tombstone that only keeps `t`) |
//! | `f` | fingerprint bytes |
//! | `t` | fencing token, decimal |
//! | `a` | attempt, decimal |
//! | `c` | creation time of the record, ms since the Unix epoch on the server's clock |
//! | `l` | lease deadline (claims), ms |
//! | `n` | nonce of the begin that made the claim, so that a retried begin gets its own lease back |
//! | `d` | completion time (completed records), ms |
//! | `r` | response bytes (completed records) |
//! | `e` | the deadline at which the record counts as absent: lease deadline plus grace for a claim, the
//! retention deadline for a completed record, ms |
//!
//! All times come from the server's `TIME`. A record is absent once `now >= e`, whatever Redis still keeps.
//! The physical expiry (`PEXPIREAT`) is `e`, but never earlier than 1 s after the millisecond encoded in the
//! fencing token, so that the token outlives the record and a new token for the key is always larger.

use std::sync::LazyLock;
use std::time::Duration;

use idem_core::Fingerprint;
use redis::{Script, Value};

/// Helpers shared by every script: the server's clock, strict integer parsing, reading and writing a record.
const COMMON: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end

-- Tokens outlive their record by this many ms, so a server clock that steps back less than this never
-- reissues a token.
local TOKEN_MARGIN_MS = 1000
local MAX_ATTEMPT = 4294967295

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Doubles hold integers exactly up to 2^53, so fields longer than 16 digits are rejected.
local function int(s)
  if type(s) ~= 'string' or #s == 0 or #s > 16 or not string.find(s, '^%d+$') then return nil end
  return tonumber(s)
end

local function fmt(n) return string.format('%.0f', n) end

local function shown(s) return string.format('%q', string.sub(s, 1, 16)) end

local function token_floor(t) return math.floor(t / 1024) + 1 + TOKEN_MARGIN_MS end

-- Returns state, record. State is 'none', 'corrupt' (record is the reason), 'gone' (a tombstone or an
-- expired record; record.t is its token), 'p' or 'c'.
local function read(key, now)
  local kind = redis.call('TYPE', key).ok
  if kind == 'none' then return 'none', nil end
  if kind ~= 'hash' then return 'corrupt', 'the key holds a Redis ' .. kind .. ', not a hash' end
  local raw = redis.call('HGETALL', key)
  local h = {}
  for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end
  if h.v == nil then return 'corrupt', 'the hash has no layout version field v' end
  if h.v ~= '1' then return 'corrupt', 'the hash has layout version ' .. shown(h.v) .. ', this code reads version 1' end
  local t = int(h.t)
  if t == nil or t == 0 then return 'corrupt', 'field t (fencing token) is missing or not a positive integer' end
  if h.s == 'x' then return 'gone', { t = t } end
  if h.s ~= 'p' and h.s ~= 'c' then return 'corrupt', 'field s (state) is missing or unknown' end
  local rec = { s = h.s, t = t, f = h.f, a = int(h.a), c = int(h.c), e = int(h.e) }
  if rec.f == nil then return 'corrupt', 'field f (fingerprint) is missing' end
  if #rec.f > 64 then return 'corrupt', 'field f (fingerprint) is longer than 64 bytes' end
  if rec.a == nil or rec.a < 1 or rec.a > MAX_ATTEMPT then return 'corrupt', 'field a (attempt) is missing or out of range' end
  if rec.c == nil then return 'corrupt', 'field c (creation time) is missing or not an integer' end
  if rec.e == nil then return 'corrupt', 'field e (expiry deadline) is missing or not an integer' end
  if h.s == 'p' then
    rec.l = int(h.l)
    rec.n = h.n or ''
    if rec.l == nil then return 'corrupt', 'field l (lease deadline) is missing or not an integer' end
  else
    rec.d = int(h.d)
    rec.r = h.r
    if rec.d == nil then return 'corrupt', 'field d (completion time) is missing or not an integer' end
    if rec.r == nil then return 'corrupt', 'field r (response) is missing' end
  end
  if now >= rec.e then return 'gone', { t = t } end
  return h.s, rec
end

local function expire(key, t, e)
  local floor = token_floor(t)
  if floor > e then e = floor end
  redis.call('PEXPIREAT', key, fmt(e))
end

local function write_claim(key, r)
  redis.call('DEL', key)
  redis.call('HSET', key, 'v', '1', 's', 'p', 'f', r.f, 't', fmt(r.t), 'a', fmt(r.a), 'c', fmt(r.c),
    'l', fmt(r.l), 'e', fmt(r.e), 'n', r.n)
  expire(key, r.t, r.e)
end

-- Removes a record. While its token is younger than the margin, a tombstone keeps the token.
local function remove(key, t, now)
  redis.call('DEL', key)
  local floor = token_floor(t)
  if floor > now then
    redis.call('HSET', key, 'v', '1', 's', 'x', 't', fmt(t))
    redis.call('PEXPIREAT', key, fmt(floor))
  end
end

-- floor is the largest token the calling process has seen plus one, or 0.
local function next_token(now, last, floor)
  local t = now * 1024
  if last ~= nil and last >= t then t = last + 1 end
  if floor ~= nil and floor > t then t = floor end
  return t
end

local function pos(n) if n < 0 then return 0 end return n end
"#;

/// KEYS: record. ARGV: fingerprint, lease ms, grace ms, nonce, token floor.
const BEGIN: &str = r#"
local key, fp, lease, grace, nonce, floor = KEYS[1], ARGV[1], int(ARGV[2]), int(ARGV[3]), ARGV[4], int(ARGV[5])
local now = now_ms()
local state, rec = read(key, now)
if state == 'corrupt' then return { 'corrupt', rec } end
if state == 'p' or state == 'c' then
  if rec.f ~= fp then return { 'mismatch' } end
  if state == 'c' then return { 'completed', rec.r, pos(rec.e - now), pos(now - rec.d) } end
  if now < rec.l then
    -- The same begin, sent again by a client library after its reply was lost, gets its lease back.
    if rec.n == nonce then return { 'acquired', rec.t, rec.a, 0, 0 } end
    return { 'in_progress', rec.l - now, rec.a }
  end
  local t = next_token(now, rec.t, floor)
  local a = rec.a + 1
  if a > MAX_ATTEMPT then a = MAX_ATTEMPT end
  write_claim(key, { f = fp, t = t, a = a, c = rec.c, l = now + lease, e = now + lease + grace, n = nonce })
  return { 'acquired', t, a, rec.t, now - rec.l }
end
local last = nil
if state == 'gone' then last = rec.t end
local t = next_token(now, last, floor)
write_claim(key, { f = fp, t = t, a = 1, c = now, l = now + lease, e = now + lease + grace, n = nonce })
return { 'acquired', t, 1, 0, 0 }
"#;

/// KEYS: record. ARGV: fencing token, response, retention ms.
const COMPLETE: &str = r#"
local key, token, response, retention = KEYS[1], int(ARGV[1]), ARGV[2], int(ARGV[3])
local now = now_ms()
local state, rec = read(key, now)
if state == 'corrupt' then return { 'corrupt', rec } end
if state == 'p' and rec.t == token then
  local e = now + retention
  redis.call('DEL', key)
  redis.call('HSET', key, 'v', '1', 's', 'c', 'f', rec.f, 't', fmt(rec.t), 'a', fmt(rec.a), 'c', fmt(rec.c),
    'd', fmt(now), 'e', fmt(e), 'r', response)
  expire(key, rec.t, e)
  return { 'stored' }
end
if state == 'c' and rec.t == token and rec.r == response then return { 'unchanged' } end
return { 'lost' }
"#;

/// KEYS: record. ARGV: fencing token.
const RELEASE: &str = r#"
local key, token = KEYS[1], int(ARGV[1])
local now = now_ms()
local state, rec = read(key, now)
if state == 'corrupt' then return { 'corrupt', rec } end
if state == 'none' or state == 'gone' then return { 'gone' } end
if state == 'p' and rec.t == token then
  remove(key, rec.t, now)
  return { 'released' }
end
return { 'lost' }
"#;

/// KEYS: record. ARGV: fencing token, lease ms, grace ms.
const RENEW: &str = r#"
local key, token, lease, grace = KEYS[1], int(ARGV[1]), int(ARGV[2]), int(ARGV[3])
local now = now_ms()
local state, rec = read(key, now)
if state == 'corrupt' then return { 'corrupt', rec } end
if state == 'p' and rec.t == token then
  local l = now + lease
  local e = l + grace
  redis.call('HSET', key, 'l', fmt(l), 'e', fmt(e))
  expire(key, rec.t, e)
  return { 'renewed', lease }
end
return { 'lost' }
"#;

/// KEYS: record.
const LOOKUP: &str = r#"
local key = KEYS[1]
local now = now_ms()
local state, rec = read(key, now)
if state == 'corrupt' then return { 'corrupt', rec } end
if state == 'p' then return { 'claim', rec.f, rec.t, rec.a, pos(rec.l - now), pos(now - rec.c) } end
if state == 'c' then return { 'completed', rec.f, rec.r, pos(rec.e - now), pos(now - rec.d) } end
return { 'none' }
"#;

/// KEYS: record. Removes any value under the key, corrupt ones included.
const DELETE: &str = r#"
local key = KEYS[1]
local now = now_ms()
local state, rec = read(key, now)
if state == 'none' or state == 'gone' then return { 0 } end
if state == 'corrupt' then
  -- The corrupt value's token cannot be trusted, so the tombstone keeps one above any token of this millisecond.
  remove(key, now * 1024 + 1023, now)
  return { 1 }
end
remove(key, rec.t, now)
return { 1 }
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{COMMON}{body}"))
}

pub(crate) static BEGIN_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(BEGIN));
pub(crate) static COMPLETE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(COMPLETE));
pub(crate) static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(RELEASE));
pub(crate) static RENEW_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(RENEW));
pub(crate) static LOOKUP_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(LOOKUP));
pub(crate) static DELETE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(DELETE));

/// A script reply that does not have the shape the script returns: a bug or a foreign script under the same
/// hash, never a corrupt record.
#[derive(Debug)]
pub(crate) struct UnexpectedReply(pub(crate) String);

impl std::fmt::Display for UnexpectedReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unexpected reply from an idem script: {}", self.0)
    }
}

impl std::error::Error for UnexpectedReply {}

/// The fields of a script's array reply, read in order.
pub(crate) struct Reply {
    items: std::vec::IntoIter<Value>,
}

impl Reply {
    pub(crate) fn new(value: Value) -> Result<(Self, String), UnexpectedReply> {
        let Value::Array(items) = value else {
            return Err(UnexpectedReply(format!("expected an array, got {value:?}")));
        };
        let mut reply = Self {
            items: items.into_iter(),
        };
        let tag = reply.bytes()?;
        let tag = String::from_utf8(tag).map_err(|_| UnexpectedReply("the tag is not UTF-8".into()))?;
        Ok((reply, tag))
    }

    fn next(&mut self) -> Result<Value, UnexpectedReply> {
        self.items
            .next()
            .ok_or_else(|| UnexpectedReply("the array is shorter than expected".into()))
    }

    pub(crate) fn bytes(&mut self) -> Result<Vec<u8>, UnexpectedReply> {
        match self.next()? {
            Value::BulkString(bytes) => Ok(bytes),
            Value::SimpleString(text) => Ok(text.into_bytes()),
            other => Err(UnexpectedReply(format!("expected a string, got {other:?}"))),
        }
    }

    pub(crate) fn text(&mut self) -> Result<String, UnexpectedReply> {
        Ok(String::from_utf8_lossy(&self.bytes()?).into_owned())
    }

    pub(crate) fn uint(&mut self) -> Result<u64, UnexpectedReply> {
        match self.next()? {
            Value::Int(number) => {
                u64::try_from(number).map_err(|_| UnexpectedReply(format!("negative integer {number}")))
            }
            other => Err(UnexpectedReply(format!("expected an integer, got {other:?}"))),
        }
    }

    pub(crate) fn attempt(&mut self) -> Result<u32, UnexpectedReply> {
        let attempt = self.uint()?;
        u32::try_from(attempt).map_err(|_| UnexpectedReply(format!("attempt {attempt} is above u32::MAX")))
    }

    pub(crate) fn millis(&mut self) -> Result<Duration, UnexpectedReply> {
        Ok(Duration::from_millis(self.uint()?))
    }

    pub(crate) fn fingerprint(&mut self) -> Result<Fingerprint, UnexpectedReply> {
        Fingerprint::new(self.bytes()?).map_err(|error| UnexpectedReply(format!("fingerprint: {error}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_have_distinct_hashes() {
        let hashes = [
            BEGIN_SCRIPT.get_hash(),
            COMPLETE_SCRIPT.get_hash(),
            RELEASE_SCRIPT.get_hash(),
            RENEW_SCRIPT.get_hash(),
            LOOKUP_SCRIPT.get_hash(),
            DELETE_SCRIPT.get_hash(),
        ];
        for (index, hash) in hashes.iter().enumerate() {
            assert_eq!(hash.len(), 40, "a SHA-1 in hex");
            assert!(
                !hashes[index + 1..].contains(hash),
                "script {index} shares its hash"
            );
        }
    }

    #[test]
    fn reply_reads_fields_in_order() {
        let value = Value::Array(vec![
            Value::BulkString(b"claim".to_vec()),
            Value::BulkString(vec![0, 255]),
            Value::Int(1_780_000_000_000 * 1024),
            Value::Int(3),
        ]);
        let (mut reply, tag) = Reply::new(value).unwrap();
        assert_eq!(tag, "claim");
        assert_eq!(reply.bytes().unwrap(), vec![0, 255]);
        assert_eq!(reply.uint().unwrap(), 1_780_000_000_000 * 1024);
        assert_eq!(reply.attempt().unwrap(), 3);
        assert!(reply.uint().is_err(), "past the end");
    }

    #[test]
    fn reply_rejects_wrong_shapes() {
        assert!(Reply::new(Value::Int(1)).is_err());
        let (mut reply, _) = Reply::new(Value::Array(vec![
            Value::BulkString(b"x".to_vec()),
            Value::Int(-1),
            Value::Int(1 << 40),
        ]))
        .unwrap();
        assert!(reply.uint().is_err(), "negative");
        assert!(reply.attempt().is_err(), "above u32");
    }
}
