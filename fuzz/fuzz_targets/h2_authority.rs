//! The client→server HTTP/2 stream of a kubelet-facing socket, through the `:authority` fix.
//!
//! Input: the bytes after the connection preface (the target prepends it so the rewriter reaches
//! frame parsing). The first byte picks a chunk size for a second, chunked run. Never panics; the
//! chunked run gives exactly the output (or the error) of the one-shot run; when the stream is
//! accepted, every header block of the output decodes with a fresh HPACK decoder (we never use
//! the dynamic table) and carries no `:authority` that h2 would refuse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use multinic_kubelet_plugin::authority::{AuthorityRewriter, PREFACE, authority_is_accepted, inspect};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, rest)) = data.split_first() else {
        return;
    };
    let input = [PREFACE, rest].concat();

    let mut whole = AuthorityRewriter::new();
    let whole_result = whole.feed(&input).map(|()| whole.take_output().to_vec());

    let mut parts = AuthorityRewriter::new();
    let mut out = Vec::new();
    let mut part_result = Ok(());
    for piece in input.chunks(usize::from(chunk).max(1)) {
        part_result = parts.feed(piece);
        out.extend(parts.take_output());
        if part_result.is_err() {
            break;
        }
    }
    match (&whole_result, &part_result) {
        (Ok(w), Ok(())) => assert_eq!(w, &out, "chunking changed the output"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("chunking changed the outcome: {whole_result:?} vs {part_result:?}"),
    }

    if let Ok(output) = whole_result {
        // Only complete frames are checked: the input may end inside one.
        let complete = complete_frames(&output);
        let blocks = inspect::header_blocks(&output[..complete])
            .expect("the output is a well-formed frame sequence that a fresh decoder reads");
        for block in blocks {
            for (name, value) in block.headers {
                if name == b":authority" {
                    assert!(authority_is_accepted(&value), "refused authority left: {value:?}");
                }
            }
        }
    }
});

/// Length of the longest prefix of `out` made of the preface and whole frames that do not leave a
/// header block open.
fn complete_frames(out: &[u8]) -> usize {
    let mut at = PREFACE.len();
    let mut good = at;
    let mut open = false;
    while let Some(h) = out.get(at..at + 9) {
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        if out.len() < at + 9 + len {
            break;
        }
        if h[3] == 0x1 || h[3] == 0x9 {
            open = h[4] & 0x4 == 0;
        }
        at += 9 + len;
        if !open {
            good = at;
        }
    }
    good
}
