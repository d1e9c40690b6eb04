//! CloudEvents over HTTP: what `POST /v1/topics/{topic}/events` parses before it publishes
//! (binary, structured and batch modes, and `deliver_at`). See `switchboard_fuzz::HttpInput`
//! for the input format (an HTTP-like head, an empty line, the body).
//!
//! Never panics; every event it accepts is valid, and comes back the same through both ways
//! a consumer gets it: the REST API's structured JSON and the gRPC API's protobuf event.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_fuzz::HttpInput;
use switchboard_server::Limits;
use switchboard_server::fuzzing::rest_publish;

fuzz_target!(|data: &[u8]| {
    let input = HttpInput::decode(data);
    let limits = Limits { max_message_bytes: 64 * 1024, max_batch_messages: 64, ..Limits::default() };
    let query = input.query_deliver_at.and_then(|q| std::str::from_utf8(q).ok());
    let Ok((_, messages)) = rest_publish(query, input.content_type, &input.headers, input.body, &limits)
    else {
        return;
    };
    assert!(!messages.is_empty());
    for m in &messages {
        m.validate(limits.max_message_bytes).expect("accepted events are valid");
        switchboard_fuzz::check_roundtrips(m);
    }
});
