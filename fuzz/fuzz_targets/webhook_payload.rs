//! Webhook payload parsing and translation must never panic, whatever the body and event
//! name: every input is either translated or refused with a `PayloadError`. The first byte
//! picks the event name, the rest is the body.

#![no_main]

use converge_github::signature::{WebhookSecret, body_sha256, sign, verify};
use converge_github::webhook::{IntakeContext, action_of, translate};
use libfuzzer_sys::fuzz_target;

const EVENTS: [&str; 9] = [
    "pull_request",
    "push",
    "check_run",
    "check_suite",
    "merge_group",
    "installation",
    "installation_repositories",
    "ping",
    "star",
];

fuzz_target!(|data: &[u8]| {
    let Some((selector, body)) = data.split_first() else {
        return;
    };
    let event = EVENTS[usize::from(*selector) % EVENTS.len()];
    let context = IntakeContext {
        tenant: Some("acme"),
        now: chrono::DateTime::default(),
    };
    let _ = translate(event, body, context);
    let _ = action_of(body);
    let _ = body_sha256(body);
    // A signature header made of the input itself: verification refuses or accepts, never panics.
    let secret = WebhookSecret::new("fuzz");
    let header = String::from_utf8_lossy(body);
    let _ = verify(std::slice::from_ref(&secret), body, Some(&header));
    assert!(verify(&[secret.clone()], body, Some(&sign(&secret, body))).is_ok());
});
