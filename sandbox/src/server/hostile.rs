//! The sandbox's hostile pending listings: a flood of ids never listed before, items padded
//! with junk members, and answers dripped out slowly. What a broken or hostile 1BitPay may send,
//! so that the daemon's bounds can be tested and benchmarked against the real thing.

use std::time::Duration;

use axum::body::{Body, Bytes};

/// The first id a flood lists: far above the ids a test seeds.
pub(super) const FLOOD_FIRST_ID: u64 = 10_000_000;

/// `n` items never listed before, from id `next` on (which moves past them): `{"id":N}`, the
/// smallest item that still has an id (16 bytes with its comma, so that 60,000 fit one 1 MiB page).
pub(super) fn flood(next: &mut u64, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let id = *next;
            *next += 1;
            format!("{{\"id\":{id}}}")
        })
        .collect()
}

/// `item` (a JSON object's text) with a junk member of `bytes` bytes added at its end.
pub(super) fn padded(item: &str, bytes: usize) -> String {
    match item.trim_end().strip_suffix('}') {
        Some(open) => {
            let sep = if open.trim_end().ends_with('{') {
                ""
            } else {
                ","
            };
            format!("{open}{sep}\"padding\":\"{}\"}}", "x".repeat(bytes))
        }
        None => item.to_string(),
    }
}

/// `text` as a body sent in ten pieces spread over `over`: a server that drips its answer.
pub(super) fn dripped(text: String, over: Duration) -> Body {
    const PIECES: usize = 10;
    let bytes = Bytes::from(text);
    let step = bytes.len().div_ceil(PIECES).max(1);
    let pause = over / u32::try_from(PIECES).unwrap_or(1);
    let stream = futures_util::stream::unfold((bytes, true), move |(rest, first)| async move {
        if rest.is_empty() {
            return None;
        }
        if !first {
            tokio::time::sleep(pause).await;
        }
        let mut rest = rest;
        let piece = rest.split_to(step.min(rest.len()));
        Some((Ok::<_, std::convert::Infallible>(piece), (rest, false)))
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_lists_ids_never_listed_before() {
        let mut next = FLOOD_FIRST_ID;
        let a = flood(&mut next, 2);
        let b = flood(&mut next, 1);
        assert_eq!(
            [a, b].concat(),
            [
                "{\"id\":10000000}",
                "{\"id\":10000001}",
                "{\"id\":10000002}"
            ]
        );
    }

    #[test]
    fn a_padded_item_is_still_one_json_object_with_its_members() {
        let p = padded(r#"{"id":5,"amount":"1"}"#, 3);
        assert_eq!(p, r#"{"id":5,"amount":"1","padding":"xxx"}"#);
        let v: serde_json::Value = serde_json::from_str(&padded("{}", 2)).unwrap();
        assert_eq!(v, serde_json::json!({"padding": "xx"}));
    }
}
