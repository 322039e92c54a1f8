//! The client's unit tests: envelopes, retries, the gate and the clock checks.

use super::*;

#[test]
fn an_envelope_with_code_other_than_200_is_an_error_even_over_http_200() {
    let e = decode_envelope(PENDING, br#"{"code":500,"message":"busy"}"#, None).unwrap_err();
    assert!(matches!(e, ClientError::Api { code: 500, .. }), "{e}");
    assert!(e.to_string().contains("busy"));
}

fn client_at(clock: Clock) -> Client {
    Client::new(ClientConfig {
        base_url: reqwest::Url::parse("http://127.0.0.1:9/").unwrap(),
        merchant_no: "m".into(),
        api_key: "k".into(),
        api_secret: SecretString::from("s"),
        lang: Lang::En,
        timeout: Duration::from_secs(5),
        max_requests_per_second: NonZeroU32::new(10).unwrap(),
        sign_order: SignOrder::CaseInsensitive,
        max_response_bytes: 1 << 20,
        max_retries: 0,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(10),
        max_clock_skew: Duration::from_secs(30),
        ca_file: None,
    })
    .unwrap()
    .with_clock(clock)
}

#[test]
fn a_clock_stepped_after_the_last_date_is_judged_as_it_reads_now() {
    // The injected clock stands still while real time passes: the reading is carried to
    // now on the monotonic clock, so the margins below leave a second for the test itself.
    let date = 1_700_000_000_000;
    let (clock, hand) = Clock::manual(date);
    let c = client_at(clock);
    assert_eq!(c.clock_doubt(None), Some(ClockDoubt::Unknown));
    // The server's Date names the second the clock reads: in step.
    let took = Duration::from_millis(5);
    c.note_server_date(
        std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000),
        took,
    );
    assert_eq!(c.clock_doubt(None), None);
    // Stepped ahead since: within 30 s + 1 s + 1 s, then beyond.
    hand.set_ms(date + 31_000);
    assert_eq!(c.clock_doubt(None), None);
    hand.set_ms(date + 33_000);
    assert!(matches!(
        c.clock_doubt(None),
        Some(ClockDoubt::Off { ahead: true, .. })
    ));
    // Stepped back: the Date's second and the answer's 5 ms count against it.
    hand.set_ms(date - 30_000);
    assert_eq!(c.clock_doubt(None), None);
    hand.set_ms(date - 32_000);
    assert!(matches!(
        c.clock_doubt(None),
        Some(ClockDoubt::Off { ahead: false, .. })
    ));
    // A Date that came before `since` does not count.
    let later = std::time::Instant::now() + Duration::from_secs(1);
    assert_eq!(c.clock_doubt(Some(later)), Some(ClockDoubt::Unknown));
}

#[test]
fn a_retrys_wait_is_drawn_under_a_bound_that_doubles_with_each_retry_up_to_the_maximum() {
    let mut c = client_at(Clock::system());
    c.cfg.initial_backoff = Duration::from_millis(10);
    c.cfg.max_backoff = Duration::from_secs(1);
    let ms = Duration::from_millis;
    for (retry, bound) in [(0, ms(10)), (1, ms(20)), (3, ms(80)), (12, ms(1000))] {
        let waits: Vec<Duration> = (0..200).map(|_| c.backoff(retry, None)).collect();
        // Uniform under the bound: 200 draws all in its lower half would be a 2^-200 chance.
        assert!(waits.iter().all(|w| *w < bound), "retry {retry}: {waits:?}");
        assert!(
            waits.iter().any(|w| *w >= bound / 2),
            "retry {retry}: {waits:?}"
        );
    }
    // A server's Retry-After is waited out, up to the maximum.
    assert!(c.backoff(0, Some(ms(500))) >= ms(500));
    assert_eq!(c.backoff(0, Some(Duration::from_secs(30))), ms(1000));
}

#[test]
fn a_string_code_200_is_success() {
    let r = decode_envelope(APPROVE, br#"{"code":"200","message":"Success"}"#, None).unwrap();
    assert!(r.data.is_none());
}
