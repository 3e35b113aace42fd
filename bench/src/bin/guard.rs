//! What the guardrail detectors cost per text: the default rule set (PII with the given
//! locales, secrets, injection signals) over texts typical of prompts and answers, on
//! one thread. Prints JSON: per text kind, its size, nanoseconds per scan (median of
//! rounds) and megabytes per second.
//!
//! Usage: bench-guard [--rounds N] [--only SUBSTRING-OF-A-TEXT-KIND]

use llmop_guard::{pii::PiiSpec, Guard, GuardSpec};
use std::time::Instant;

fn main() {
    let rounds: usize = std::env::args()
        .skip_while(|a| a != "--rounds")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(15);
    let only = std::env::args().skip_while(|a| a != "--only").nth(1);
    let guard = Guard::new(&GuardSpec {
        pii: Some(PiiSpec {
            kinds: vec![],
            locales: vec!["us".into(), "gb".into()],
        }),
        ..GuardSpec::default()
    })
    .expect("the default spec");
    let prose = "Thanks for getting back to me. I looked at the quarterly numbers again and \
        the churn in the enterprise segment is mostly explained by two accounts that moved \
        to annual billing. Could you summarise the attached notes in three bullet points, \
        keeping the tone neutral, and suggest one follow-up question for the team? ";
    let with_pii = "Customer Jane Roe (jane.roe@example.com, +1 415 555 2671) paid with card \
        4111 1111 1111 1111 and asked for a refund to DE89 3704 0044 0532 0130 00. ";
    let code = "fn main() { let v: Vec<u32> = (0..10).collect(); println!(\"{:?}\", v); } \
        // version 1.2.3, see https://example.com/docs?id=42 ";
    // bench/guard.sh's prompt: what the gateway's guardrails benchmark scans per call.
    let support = "Hello, I ordered a standing desk last week (order 4471-2209-1234) and it \
        arrived with a cracked leg. Could you arrange a replacement part or a return? You can \
        reach me at jamie.rivera@example.com during office hours. I have attached photos of \
        the damage to the ticket. The box itself looked fine, so I think it happened at the \
        factory. Thanks for your help, and sorry for the long message. Kind regards, Jamie";
    let texts: Vec<(&str, String)> = vec![
        ("support message (480 B)", support.to_string()),
        ("short prompt (300 B)", prose.to_string()),
        (
            "prompt with PII (1 KB)",
            format!("{prose}{with_pii}{prose}"),
        ),
        ("agent context (16 KB)", prose.repeat(55)),
        ("code answer (4 KB)", code.repeat(32)),
        (
            "long document with PII (64 KB)",
            format!("{}{with_pii}", prose.repeat(220)),
        ),
    ];
    let mut out = Vec::new();
    for (name, text) in &texts {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let n = (200_000 / text.len()).clamp(5, 20_000);
        let mut per_scan = Vec::new();
        let mut found = 0;
        for _ in 0..rounds {
            let t = Instant::now();
            for _ in 0..n {
                found = std::hint::black_box(guard.scan(std::hint::black_box(text))).len();
            }
            per_scan.push(t.elapsed().as_nanos() as f64 / n as f64);
        }
        per_scan.sort_by(f64::total_cmp);
        let median = per_scan[per_scan.len() / 2];
        out.push(serde_json::json!({
            "text": name,
            "bytes": text.len(),
            "findings": found,
            "ns_per_scan": median.round(),
            "mb_per_s": (text.len() as f64 / median * 1e3).round(),
        }));
    }
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
}
