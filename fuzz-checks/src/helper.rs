//! Both ends of the protocol on labssh-init's socket: what the helper decodes from the
//! agent (it runs as root in a student's container) and what the agent decodes from the
//! helper (which a root student might have replaced, were the agent not careful).

use labssh_helper_proto::wire::{self, Exit, Request};

/// A frame sent to the helper: splitting never reads past the buffer, and a request
/// that decodes re-encodes to one that decodes the same.
pub fn helper_request(data: &[u8]) {
    let Some((kind, payload, used)) = split(data) else {
        return;
    };
    assert!(used <= data.len() && payload.len() + wire::HEADER_LEN == used);
    let Ok(request) = Request::decode(kind, payload) else {
        return;
    };
    let frame = request.encode();
    let (kind2, payload2, used2) = split(&frame).expect("an encoded request is a whole frame");
    assert_eq!(used2, frame.len());
    assert_eq!(Request::decode(kind2, payload2).as_ref(), Ok(&request));
}

/// A frame sent back by the helper: exit statuses and address lists decode to what,
/// encoded again, decodes the same.
pub fn helper_answer(data: &[u8]) {
    let Some((kind, payload, _)) = split(data) else {
        return;
    };
    match kind {
        wire::kind::EXIT => {
            if let Ok(exit) = Exit::decode(payload) {
                assert_eq!(Exit::decode(&exit.encode()), Ok(exit));
            }
        }
        wire::kind::ADDRESSES => {
            if let Ok(addrs) = wire::decode_addresses(payload) {
                assert!(addrs.len() <= wire::MAX_ADDRESSES);
                let again = wire::encode_addresses(&addrs);
                assert_eq!(wire::decode_addresses(&again), Ok(addrs));
            }
        }
        _ => {
            // Any other frame is read as bytes or a message; it must at least split.
            let _ = String::from_utf8_lossy(payload);
        }
    }
}

fn split(data: &[u8]) -> Option<wire::Frame<'_>> {
    match wire::split_frame(data) {
        Ok(Some(frame)) => Some(frame),
        Ok(None) => {
            assert!(data.len() < wire::MAX_FRAME + wire::HEADER_LEN);
            None
        }
        Err(_) => None,
    }
}
