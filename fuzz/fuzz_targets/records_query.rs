//! The query string of `GET /v1/requests` (filters, times, cursor, limit): any bytes
//! become a filter or an error naming the parameter; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = std::str::from_utf8(data) {
        if let Ok(f) = llmop_store::ListFilter::from_query(q, 1_795_305_600_000) {
            assert!(f.limit.is_none_or(|l| (1..=1000).contains(&l)));
        }
        let _ = llmop_store::parse_time(q, 1_795_305_600_000);
    }
});
