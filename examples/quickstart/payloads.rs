//! The GitHub webhook payloads that the delivery log is built from, embedded at compile time.

use serde_json::{Value, json};

/// One payload file: the event type that GitHub sends in the `X-GitHub-Event` header, and one delivery body.
pub(crate) struct Payload {
    pub(crate) event_type: &'static str,
    /// Path under `examples/data/github-webhooks/`.
    pub(crate) file: &'static str,
    pub(crate) json: &'static [u8],
}

macro_rules! payload {
    ($event_type:literal, $file:literal) => {
        Payload {
            event_type: $event_type,
            file: concat!($event_type, "/", $file),
            json: include_bytes!(concat!("../data/github-webhooks/", $event_type, "/", $file)),
        }
    };
}

/// The payloads the log uses: the common events of a repository, from `ping` to `workflow_run`.
pub(crate) const PAYLOADS: &[Payload] = &[
    payload!("push", "payload.json"),
    payload!("push", "1.payload.json"),
    payload!("issues", "opened.payload.json"),
    payload!("issues", "labeled.payload.json"),
    payload!("issue_comment", "created.payload.json"),
    payload!("pull_request", "opened.payload.json"),
    payload!("pull_request", "synchronize.payload.json"),
    payload!("pull_request_review", "submitted.payload.json"),
    payload!("release", "published.payload.json"),
    payload!("create", "payload.json"),
    payload!("delete", "payload.json"),
    payload!("star", "created.payload.json"),
    payload!("check_run", "completed.payload.json"),
    payload!("workflow_run", "completed.payload.json"),
    payload!("label", "created.payload.json"),
    payload!("ping", "payload.json"),
];

/// Builds the body of an event: the payload as GitHub sends it to a GitHub App, with `installation.id` set to
/// the installation the event comes from. Events with the same payload file but different installations get
/// different bodies, and so different fingerprints.
///
/// The body is compact JSON with its object keys sorted, because that is how `serde_json` writes a `Value`.
pub(crate) fn event_body(payload: &Payload, installation_id: u64) -> Result<Vec<u8>, String> {
    let mut value: Value = serde_json::from_slice(payload.json)
        .map_err(|error| format!("payload {} is not valid JSON: {error}", payload.file))?;
    let Some(object) = value.as_object_mut() else {
        return Err(format!("payload {} is not a JSON object", payload.file));
    };
    object.insert("installation".to_owned(), json!({ "id": installation_id }));
    serde_json::to_vec(&value)
        .map_err(|error| format!("payload {} cannot be written back: {error}", payload.file))
}

/// Summarizes a body for the ledger, such as `issues.opened on Codertocat/Hello-World by Codertocat`.
pub(crate) fn summarize(event_type: &str, body: &[u8]) -> Result<String, String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|error| format!("{event_type} body is not valid JSON: {error}"))?;
    let action = value["action"]
        .as_str()
        .map(|action| format!(".{action}"))
        .unwrap_or_default();
    let repository = value["repository"]["full_name"]
        .as_str()
        .unwrap_or("no repository");
    let sender = value["sender"]["login"].as_str().unwrap_or("nobody");
    Ok(format!("{event_type}{action} on {repository} by {sender}"))
}
