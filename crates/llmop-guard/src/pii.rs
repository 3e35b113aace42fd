//! Personal data, validated: a pattern proposes a candidate, a check decides. Emails
//! (RFC 5321 shape, no dot runs, a real TLD shape), phone numbers (international with a
//! `+`, or the locale's national format with separators), payment cards (a known issuer
//! prefix, 13-19 digits and the Luhn digit), IBANs (the country's length and the mod-97
//! checksum), IP addresses (parsed, not version strings), and national ids where the
//! locale's id has a checksum or fixed structure (US SSN structure, Dutch BSN 11-test,
//! Spanish DNI/NIE letter).

use crate::{around, Category, Finding, SpecError};
use regex::Regex;
use regex_automata::{meta, Input};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::sync::OnceLock;

/// Which PII a guard looks for.
#[derive(Debug, Clone, PartialEq)]
pub struct PiiSpec {
    /// `email`, `phone`, `card`, `iban`, `ip`, `national_id`; empty: all.
    pub kinds: Vec<String>,
    /// Locales for national formats (phone numbers without `+`, national ids): `us`,
    /// `nl`, `es`, `gb`, `de`, `fr`.
    pub locales: Vec<String>,
}

impl Default for PiiSpec {
    fn default() -> Self {
        PiiSpec {
            kinds: Vec::new(),
            locales: vec!["us".into()],
        }
    }
}

pub const KINDS: &[&str] = &["email", "phone", "card", "iban", "ip", "national_id"];
pub const LOCALES: &[&str] = &["us", "nl", "es", "gb", "de", "fr"];

pub struct Pii {
    kinds: Vec<&'static str>,
    locales: Vec<&'static str>,
}

struct Patterns {
    email: Regex,
    /// The digit patterns: searched only within [`Shape::runs`].
    phone: meta::Regex,
    card: meta::Regex,
    iban: Regex,
    ipv4: Regex,
    ipv6: Regex,
    ssn: meta::Regex,
    bsn: Regex,
    bsn_context: Regex,
    dni: Regex,
}

/// What a text's bytes say about which patterns can match in it, from one pass: a
/// pattern whose necessary shape is absent is not run (each is a pass over the text,
/// and most texts hold no IBAN, IP address or SSN).
struct Shape {
    /// ASCII digits.
    digits: usize,
    /// Two capital letters then two digits somewhere (an IBAN's start).
    iban_start: bool,
    /// A digit, a dot, a digit (an IPv4 address has three).
    dotted_digits: bool,
    /// A digit, a hyphen, two digits, a hyphen, a digit: an SSN's middle group with its
    /// hyphens (`ddd-dd-dddd`). Order and reference numbers with hyphens (`4471-2209-…`)
    /// seldom have it, and the SSN pattern's search is then skipped (about 1k
    /// instructions of fixed cost a search, callgrind).
    ssn_middle: bool,
    /// Where the digit patterns can match (see [`Run`]): a prompt's few inline.
    runs: smallvec::SmallVec<[Run; 4]>,
}

/// A maximal run of the characters phone numbers, card numbers and SSNs are written
/// with (digits, `+`, parentheses, dots, hyphens, spaces and tabs), and its digits.
/// Only runs holding at least two digits and eight characters (the shortest phone
/// match) are kept: every match of the digit patterns lies in one of them.
struct Run {
    span: Range<usize>,
    digits: usize,
}

fn is_run_byte(b: u8) -> bool {
    b.is_ascii_digit() || matches!(b, b'+' | b'(' | b')' | b'.' | b'-' | b' ' | b'\t')
}

impl Shape {
    /// One pass that stops only at digits: the runs are grown from each run's first
    /// digit (prose is mostly letters and spaces, and a run without a digit is of no
    /// use), and the shape's tests look at each digit's neighbours. Two passes over
    /// every byte (the shape's, then the runs') were a third of a prompt's PII scan
    /// (callgrind, `docs/benchmarks.md`).
    fn of(text: &str) -> Shape {
        let b = text.as_bytes();
        let mut s = Shape {
            digits: 0,
            iban_start: false,
            dotted_digits: false,
            ssn_middle: false,
            runs: smallvec::SmallVec::new(),
        };
        let mut at = 0;
        while let Some(first) = next_digit(b, at) {
            // The run's start: back over run bytes (none of them digits). It cannot
            // reach into the previous run, which ended at a byte that is not one.
            let mut start = first;
            while start > 0 && is_run_byte(b[start - 1]) {
                start -= 1;
            }
            let mut end = first;
            let mut digits = 0;
            while end < b.len() && is_run_byte(b[end]) {
                if b[end].is_ascii_digit() {
                    digits += 1;
                    s.digit_at(b, end);
                }
                end += 1;
            }
            s.digits += digits;
            if digits >= 2 && end - start >= 8 {
                s.runs.push(Run {
                    span: start..end,
                    digits,
                });
            }
            at = end;
        }
        s
    }

    /// The shape's tests at the digit `b[i]`.
    fn digit_at(&mut self, b: &[u8], i: usize) {
        let next = b.get(i + 2).is_some_and(u8::is_ascii_digit);
        match b.get(i + 1) {
            Some(b'.') if next => self.dotted_digits = true,
            Some(b'-') if next => {
                self.ssn_middle |= b.get(i + 3).is_some_and(u8::is_ascii_digit)
                    && b.get(i + 4) == Some(&b'-')
                    && b.get(i + 5).is_some_and(u8::is_ascii_digit)
            }
            Some(d) if d.is_ascii_digit() && i >= 2 => {
                self.iban_start |= b[i - 2].is_ascii_uppercase() && b[i - 1].is_ascii_uppercase()
            }
            _ => {}
        }
    }
}

/// The first ASCII digit of `b` at or after `from`. Sixteen bytes at a time, each
/// block tested without a branch per byte (the compiler makes one vector compare of
/// it): prose has few digits, and a byte-by-byte search cost about 9 instructions per
/// byte. On `bench/guard.sh`'s 409-byte prompt this saves ~1,270 of the PII scan's
/// instructions (callgrind, `bench-guard`). A property test checks it against
/// `position`.
fn next_digit(b: &[u8], from: usize) -> Option<usize> {
    const BLOCK: usize = 16;
    let rest = b.get(from..)?;
    let mut blocks = rest.chunks_exact(BLOCK);
    let mut at = from;
    for block in &mut blocks {
        let any = block
            .iter()
            .fold(false, |any, &c| any | (c.wrapping_sub(b'0') < 10));
        if any {
            return block.iter().position(u8::is_ascii_digit).map(|i| at + i);
        }
        at += BLOCK;
    }
    blocks
        .remainder()
        .iter()
        .position(u8::is_ascii_digit)
        .map(|i| at + i)
}

/// The matches of a digit pattern in the `runs` with at least `digits` digits, in
/// order: the same as searching the whole text, since no match can leave a run (a
/// property test checks this). Look-arounds (`\b`) still see the text around a run.
fn within<'a>(
    re: &'a meta::Regex,
    runs: &'a [Run],
    text: &'a str,
    digits: usize,
) -> impl Iterator<Item = Range<usize>> + 'a {
    runs.iter()
        .filter(move |r| r.digits >= digits)
        .flat_map(move |r| re.find_iter(Input::new(text).range(r.span.clone())))
        .map(|m| m.range())
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| {
        // The patterns are constants: a failure is a bug caught by every test.
        let re = |s: &str| Regex::new(s).expect("a constant pattern");
        let digits = |s: &str| meta::Regex::new(s).expect("a constant pattern");
        Patterns {
            email: re(
                r"(?i)[a-z0-9._%+\-]{1,64}@(?:[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}",
            ),
            phone: digits(r"(?:\+|(?-u:\b)00)?\(?[0-9][[0-9][ \t]().\-]{6,20}[0-9]"),
            card: digits(r"(?-u:\b)[0-9](?:[ \-]?[0-9]){12,18}(?-u:\b)"),
            iban: re(r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}(?-u:\b)"),
            ipv4: re(r"(?-u:\b)(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?-u:\b)"),
            ipv6: re(r"(?i)[0-9a-f:]*:[0-9a-f:]*:[0-9a-f:.]*"),
            ssn: digits(r"(?-u:\b)[0-9]{3}-[0-9]{2}-[0-9]{4}(?-u:\b)"),
            bsn: re(r"(?-u:\b)[0-9]{9}(?-u:\b)"),
            bsn_context: re(
                r"(?i)(?-u:\b)(?:bsn|burgerservicenummer|sofinummer|sofi-nummer)(?-u:\b)",
            ),
            dni: re(r"(?i)(?-u:\b)[XYZ0-9][0-9]{7}-?[A-Z](?-u:\b)"),
        }
    })
}

impl Pii {
    pub fn new(spec: &PiiSpec) -> Result<Pii, SpecError> {
        let pick = |names: &[String], known: &'static [&'static str], what: &str| {
            names
                .iter()
                .map(|n| {
                    known
                        .iter()
                        .find(|k| k.eq_ignore_ascii_case(n))
                        .copied()
                        .ok_or_else(|| {
                            SpecError(format!("unknown PII {what} `{n}` (known: {known:?})"))
                        })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let kinds = if spec.kinds.is_empty() {
            KINDS.to_vec()
        } else {
            pick(&spec.kinds, KINDS, "kind")?
        };
        Ok(Pii {
            kinds,
            locales: pick(&spec.locales, LOCALES, "locale")?,
        })
    }

    fn wants(&self, kind: &str) -> bool {
        self.kinds.contains(&kind)
    }

    fn locale(&self, l: &str) -> bool {
        self.locales.contains(&l)
    }

    pub fn scan(&self, text: &str) -> Vec<Finding> {
        let p = patterns();
        let shape = Shape::of(text);
        let mut out = Vec::new();
        let push = |out: &mut Vec<Finding>, rule: &'static str, m: Range<usize>| {
            out.push(Finding::new(rule, Category::Pii, m));
        };
        // Where the digit patterns can match, each searched only there: their own
        // prefilter stops at every digit and runs the DFA on from it, up to the text's
        // end when nothing matches. On prose with one number this saves little (0.6k of
        // a 409-byte message's 20.6k instructions, docs/benchmarks.md); it bounds the
        // work on digit-heavy text (tables, logs, code) to the runs themselves.
        let within = |re, digits| within(re, &shape.runs, text, digits);
        if self.wants("email") && text.contains('@') {
            if text.is_ascii() {
                for m in ascii_emails(text) {
                    if valid_email(&text[m.clone()]) {
                        push(&mut out, "pii.email", m);
                    }
                }
            } else {
                for m in p.email.find_iter(text) {
                    if valid_email(m.as_str()) {
                        push(&mut out, "pii.email", m.range());
                    }
                }
            }
        }
        let digits = shape.digits;
        if self.wants("card") && digits >= 13 {
            for m in within(&p.card, 13) {
                let (before, after) = around(text, m.start, m.end);
                if !is_digitish(before) && !is_digitish(after) && valid_card(&text[m.clone()]) {
                    push(&mut out, "pii.card", m);
                }
            }
        }
        // IBAN-shaped runs, valid or not: IBANs, and digits that are not a phone number.
        let ibanish: Vec<regex::Match<'_>> =
            if shape.iban_start && (self.wants("iban") || self.wants("phone")) {
                p.iban.find_iter(text).collect()
            } else {
                Vec::new()
            };
        if self.wants("iban") {
            for m in &ibanish {
                if valid_iban(m.as_str()) {
                    push(&mut out, "pii.iban", m.range());
                }
            }
        }
        if self.wants("ip") {
            if shape.dotted_digits {
                for m in p.ipv4.find_iter(text) {
                    let (before, after) = around(text, m.start(), m.end());
                    let dotted = |c: Option<char>| matches!(c, Some('.'));
                    let versioned = text[..m.start()]
                        .trim_end()
                        .to_ascii_lowercase()
                        .ends_with(['v'])
                        || text[..m.start()].to_ascii_lowercase().ends_with("version ");
                    // `1.2.3.4.5`: part of a longer dotted number.
                    let longer = dotted(before)
                        || (dotted(after)
                            && text[m.end() + 1..].starts_with(|c: char| c.is_ascii_digit()));
                    if !longer && !versioned && m.as_str().parse::<Ipv4Addr>().is_ok() {
                        push(&mut out, "pii.ip", m.range());
                    }
                }
            }
            // An IPv6 address has seven colons, or two together: the colons are
            // counted (by `memchr`, up to seven) before "::" is looked for, so a text
            // with none is one vector pass.
            let colons = memchr::memchr_iter(b':', text.as_bytes()).take(7).count();
            if colons >= 7 || (colons >= 2 && text.contains("::")) {
                for m in p.ipv6.find_iter(text) {
                    let s = m.as_str().trim_end_matches('.');
                    if s.len() >= 3 && s.parse::<Ipv6Addr>().is_ok() && s != "::" {
                        out.push(Finding::new(
                            "pii.ip",
                            Category::Pii,
                            m.start()..m.start() + s.len(),
                        ));
                    }
                }
            }
        }
        if self.wants("national_id") {
            if self.locale("us") && shape.ssn_middle {
                for m in within(&p.ssn, 9) {
                    let (before, after) = around(text, m.start, m.end);
                    if !is_digitish(before) && !is_digitish(after) && valid_ssn(&text[m.clone()]) {
                        push(&mut out, "pii.national_id", m);
                    }
                }
            }
            // Nine digits passing the 11-test are one number in eleven: a BSN only where
            // the text names it.
            if self.locale("nl") && p.bsn_context.is_match(text) {
                for m in p.bsn.find_iter(text) {
                    if valid_bsn(m.as_str()) {
                        push(&mut out, "pii.national_id", m.range());
                    }
                }
            }
            if self.locale("es") && digits >= 7 {
                for m in p.dni.find_iter(text) {
                    if valid_dni(m.as_str()) {
                        push(&mut out, "pii.national_id", m.range());
                    }
                }
            }
        }
        if self.wants("phone") && digits >= 7 {
            for m in within(&p.phone, 2) {
                if ibanish.iter().any(|r| crate::overlaps(&r.range(), &m)) {
                    continue;
                }
                let s = text[m.clone()].trim_end();
                let (before, after) = around(text, m.start, m.start + s.len());
                if is_digitish(before)
                    || matches!(before, Some('-' | '.' | '/' | '#'))
                    || is_digitish(after)
                {
                    continue;
                }
                if self.valid_phone(s) {
                    out.push(Finding::new(
                        "pii.phone",
                        Category::Pii,
                        m.start..m.start + s.len(),
                    ));
                }
            }
        }
        // Distinct rules may propose the same digits (a phone-shaped card): the first
        // (most specific) keeps them.
        // Kept in place: the first `kept` findings are those kept so far. Sorted by
        // start, findings that do not overlap have sorted ends too, so only the last
        // one kept can overlap the next (checked against all, 100,000 addresses took
        // 11 s).
        out.sort_by_key(|f| (f.span.start, std::cmp::Reverse(f.span.end)));
        let mut kept = 0;
        for i in 0..out.len() {
            if kept == 0 || !crate::overlaps(&out[kept - 1].span, &out[i].span) {
                out.swap(kept, i);
                kept += 1;
            }
        }
        out.truncate(kept);
        out
    }

    /// International numbers (`+` or `00` and a country code): 8-15 digits (E.164).
    /// National numbers, by locale, with the separators people write: US/NANP
    /// `(415) 555-2671`, `415-555-2671`, `415.555.2671`; GB `020 7946 0958`,
    /// `07700 900123`; NL/DE/FR/ES: a leading 0 (ES: 6-9) and 9-11 digits in groups.
    /// A bare digit run without `+` is not a phone number (it is more often an id).
    fn valid_phone(&self, s: &str) -> bool {
        // No phone number has more digits than a buffer holds.
        let Some(digits) = Digits::of(s) else {
            return false;
        };
        let digits = digits.as_str();
        let n = digits.len();
        let has_sep = s.contains([' ', '-', '.', '(']);
        // Dates and times look like numbers with separators.
        if s.contains(['.', '-']) && s.split(['.', '-']).any(|g| g.trim().is_empty()) {
            return false;
        }
        if s.starts_with('+') || s.starts_with("00") {
            let n = if s.starts_with("00") { n - 2 } else { n };
            return (8..=15).contains(&n) && !digits.starts_with("000");
        }
        if !has_sep {
            return false;
        }
        // The US SSN's shape (ddd-dd-dddd) is not how any locale writes a phone number.
        if patterns()
            .ssn
            .find(s)
            .is_some_and(|m| m.range() == (0..s.len()))
        {
            return false;
        }
        // At least two groups of digits, none longer than eight.
        let (groups, longest) = s
            .split(|c: char| !c.is_ascii_digit())
            .filter(|g| !g.is_empty())
            .fold((0, 0), |(n, l), g| (n + 1, l.max(g.len())));
        if groups < 2 || longest > 8 {
            return false;
        }
        if self.locale("us") {
            let d = digits
                .strip_prefix('1')
                .filter(|_| n == 11)
                .unwrap_or(digits);
            let b = d.as_bytes();
            if d.len() == 10
                && (b'2'..=b'9').contains(&b[0])
                && (b'2'..=b'9').contains(&b[3])
                && !(b[1] == b[2] && b[1] == b'1')
            {
                return true;
            }
        }
        let national = |first: &[u8], lens: std::ops::RangeInclusive<usize>| {
            first.contains(&digits.as_bytes()[0]) && lens.contains(&n)
        };
        (self.locale("gb") && national(b"0", 10..=11))
            || (self.locale("nl") && national(b"0", 10..=10))
            || (self.locale("de") && national(b"0", 10..=12))
            || (self.locale("fr") && national(b"0", 10..=10))
            || (self.locale("es") && national(b"6789", 9..=9))
    }
}

fn is_digitish(c: Option<char>) -> bool {
    matches!(c, Some(c) if c.is_ascii_alphanumeric() || c == '_')
}

/// The matches of the email pattern ([`Patterns::email`]) in ASCII text, as its
/// `find_iter` gives them, found from each `@` outwards. The pattern's engine costs
/// about 3k instructions a prompt in fixed work (its lazy DFA's start states, a reverse
/// search bounded by a quadratic-time guard, then a forward one) for one address
/// (callgrind, `bench/guard.sh`); this costs a few hundred. Text that is not ASCII
/// goes to the pattern, whose `(?i)` also matches the Kelvin sign and the long s. A
/// property test checks this against the pattern.
///
/// The pattern, `[a-z0-9._%+-]{1,64}@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}`
/// without regard to case, matched leftmost-first:
/// - a match holds exactly one `@` (no class has it), so its start is within the
///   local-part characters just before an `@`: the earliest of them that leaves at
///   most 64, and not before where the search resumes;
/// - a domain label cannot hold a dot and must be followed by one, so the labels are
///   exactly the dot-separated segments after the `@`; the greedy repetition takes as
///   many valid ones as there are, then gives them back one at a time until the
///   letters after the last one taken make a top-level domain of at least two
///   (taking up to 24);
/// - the earliest `@` with such a domain and a local part gives the leftmost match.
fn ascii_emails(text: &str) -> impl Iterator<Item = Range<usize>> + '_ {
    let b = text.as_bytes();
    let local = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-');
    let mut from = 0;
    std::iter::from_fn(move || {
        while let Some(i) = memchr::memchr(b'@', b.get(from..)?) {
            let at = from + i;
            // The local part's earliest start.
            let mut start = at;
            while start > from && at - start < 64 && local(b[start - 1]) {
                start -= 1;
            }
            if start < at {
                if let Some(end) = ascii_domain_end(b, at + 1) {
                    from = end;
                    return Some(start..end);
                }
            }
            from = at + 1;
        }
        None
    })
}

/// Where the email pattern's domain starting at `b[at]` ends (see [`ascii_emails`]).
fn ascii_domain_end(b: &[u8], at: usize) -> Option<usize> {
    // The labels' ends (each at its dot), up to the first segment that is not one.
    let mut dots: smallvec::SmallVec<[usize; 8]> = smallvec::SmallVec::new();
    let mut start = at;
    loop {
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'-') {
            end += 1;
        }
        let len = end - start;
        let label = (1..=63).contains(&len)
            && b[start] != b'-'
            && b[end - 1] != b'-'
            && b.get(end) == Some(&b'.');
        if !label {
            break;
        }
        dots.push(end);
        start = end + 1;
    }
    // The most labels first; each then needs two letters after its dot.
    dots.iter().rev().find_map(|&dot| {
        let letters = b[dot + 1..]
            .iter()
            .take(24)
            .take_while(|c| c.is_ascii_alphabetic())
            .count();
        (letters >= 2).then_some(dot + 1 + letters)
    })
}

/// The local part and domain of an address as mail servers accept them: no leading,
/// trailing or doubled dot; a domain of at least two labels.
pub fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && domain.contains('.')
        && !domain.contains("..")
}

/// The Luhn checksum of the digits of `s` (separators ignored).
pub fn luhn(s: &str) -> bool {
    let mut sum = 0;
    let mut double = false;
    let mut count = 0;
    for c in s.chars().rev() {
        let Some(d) = c.to_digit(10) else {
            if c == ' ' || c == '-' {
                continue;
            }
            return false;
        };
        let v = if double {
            let x = d * 2;
            if x > 9 {
                x - 9
            } else {
                x
            }
        } else {
            d
        };
        sum += v;
        double = !double;
        count += 1;
    }
    count > 0 && sum % 10 == 0
}

/// A card number: 13-19 digits, one separator style, an issuer prefix of a network
/// that issues such lengths (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay,
/// Maestro), and the Luhn digit.
pub fn valid_card(s: &str) -> bool {
    let Some(digits) = Digits::of(s) else {
        return false;
    };
    let digits = digits.as_str();
    let n = digits.len();
    if !(13..=19).contains(&n) || (s.contains(' ') && s.contains('-')) {
        return false;
    }
    let p = |len: usize| digits[..len].parse::<u32>().unwrap_or(0);
    let issuer = match digits.as_bytes()[0] {
        b'4' => matches!(n, 13 | 16 | 19),
        b'5' => (51..=55).contains(&p(2)) && n == 16,
        b'2' => (2221..=2720).contains(&p(4)) && n == 16,
        b'3' => {
            (matches!(p(2), 34 | 37) && n == 15)
                || ((3528..=3589).contains(&p(4)) && (16..=19).contains(&n))
                || (matches!(p(2), 36 | 38 | 39) && (14..=19).contains(&n))
                || ((300..=305).contains(&p(3)) && (14..=19).contains(&n))
        }
        b'6' => {
            (p(4) == 6011 || p(2) == 65 || (644..=649).contains(&p(3)) || p(2) == 62)
                && (16..=19).contains(&n)
                || matches!(p(4), 6304 | 6759 | 6761 | 6762 | 6763) && (12..=19).contains(&n)
        }
        _ => false,
    };
    issuer && luhn(digits)
}

/// The ASCII digits of a candidate, on the stack: a card or phone candidate is checked
/// for every digit run that looks like one (order numbers, ids), and collecting its
/// digits into a `String` was an allocation each time. `None` for more digits than any
/// card (19) or phone number (15, with a `00` prefix) has.
struct Digits {
    buf: [u8; 24],
    n: usize,
}

impl Digits {
    fn of(s: &str) -> Option<Digits> {
        let mut d = Digits { buf: [0; 24], n: 0 };
        for b in s.bytes().filter(u8::is_ascii_digit) {
            *d.buf.get_mut(d.n)? = b;
            d.n += 1;
        }
        Some(d)
    }

    fn as_str(&self) -> &str {
        // ASCII digits only: always UTF-8.
        std::str::from_utf8(&self.buf[..self.n]).unwrap_or_default()
    }
}

/// IBAN lengths per country (ISO 13616 registry, the countries most seen in Europe
/// and beyond); a country not listed must have 15-34 characters.
fn iban_length(country: &str) -> Option<usize> {
    Some(match country {
        "AD" => 24,
        "AE" => 23,
        "AT" => 20,
        "BE" => 16,
        "BG" => 22,
        "BR" => 29,
        "CH" => 21,
        "CY" => 28,
        "CZ" => 24,
        "DE" => 22,
        "DK" => 18,
        "EE" => 20,
        "ES" => 24,
        "FI" => 18,
        "FR" => 27,
        "GB" => 22,
        "GR" => 27,
        "HR" => 21,
        "HU" => 28,
        "IE" => 22,
        "IS" => 26,
        "IT" => 27,
        "LI" => 21,
        "LT" => 20,
        "LU" => 20,
        "LV" => 21,
        "MC" => 27,
        "MT" => 31,
        "NL" => 18,
        "NO" => 15,
        "PL" => 28,
        "PT" => 25,
        "RO" => 24,
        "SA" => 24,
        "SE" => 24,
        "SI" => 19,
        "SK" => 24,
        "TR" => 26,
        _ => return None,
    })
}

/// An IBAN: the country's length and ISO 7064 mod 97-10 remainder 1.
pub fn valid_iban(s: &str) -> bool {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.len() < 15 || compact.len() > 34 || !compact.is_ascii() {
        return false;
    }
    match iban_length(&compact[..2]) {
        Some(len) if len != compact.len() => return false,
        _ => {}
    }
    let rearranged = compact[4..].chars().chain(compact[..4].chars());
    let mut rem: u32 = 0;
    for c in rearranged {
        let v = match c {
            '0'..='9' => c as u32 - '0' as u32,
            'A'..='Z' => c as u32 - 'A' as u32 + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// A US Social Security number's structure (the SSA never issues area 000, 666 or
/// 900-999, group 00 or serial 0000). It has no check digit.
pub fn valid_ssn(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let [area, group, serial] = parts[..] else {
        return false;
    };
    let a: u32 = area.parse().unwrap_or(0);
    a != 0 && a != 666 && a < 900 && group != "00" && serial != "0000"
}

/// A Dutch BSN: 9 digits passing the "11-test" (weights 9..2 and -1).
pub fn valid_bsn(s: &str) -> bool {
    let d: Vec<i32> = s
        .chars()
        .filter_map(|c| c.to_digit(10))
        .map(|x| x as i32)
        .collect();
    if d.len() != 9 || d.iter().all(|x| *x == 0) {
        return false;
    }
    let sum: i32 = (0..8).map(|i| d[i] * (9 - i as i32)).sum::<i32>() - d[8];
    sum % 11 == 0
}

/// A Spanish DNI (8 digits) or NIE (X/Y/Z and 7 digits) with its control letter.
pub fn valid_dni(s: &str) -> bool {
    const LETTERS: &[u8] = b"TRWAGMYFPDXBNJZSQVHLCKE";
    let s: String = s
        .chars()
        .filter(|c| *c != '-')
        .collect::<String>()
        .to_ascii_uppercase();
    let (body, letter) = s.split_at(s.len() - 1);
    let body = match body.as_bytes().first() {
        Some(b'X') => format!("0{}", &body[1..]),
        Some(b'Y') => format!("1{}", &body[1..]),
        Some(b'Z') => format!("2{}", &body[1..]),
        _ => body.to_string(),
    };
    let Ok(n) = body.parse::<u32>() else {
        return false;
    };
    letter.as_bytes().first() == Some(&LETTERS[(n % 23) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules(text: &str, locales: &[&str]) -> Vec<(String, String)> {
        let p = Pii::new(&PiiSpec {
            kinds: vec![],
            locales: locales.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap();
        p.scan(text)
            .into_iter()
            .map(|f| (f.rule.to_string(), text[f.span].to_string()))
            .collect()
    }

    #[test]
    fn ipv6_addresses_full_or_shortened_and_colons_that_are_not() {
        let ip = |t: &str| -> Vec<String> {
            rules(t, &["us"])
                .into_iter()
                .filter(|(r, _)| r == "pii.ip")
                .map(|(_, v)| v)
                .collect()
        };
        let full = "2001:0db8:85a3:0000:0000:8a2e:0370:7334";
        assert_eq!(ip(&format!("host {full} is down")), vec![full.to_string()]);
        assert_eq!(ip("loopback ::1 and fe80::1 here"), vec!["::1", "fe80::1"]);
        assert!(ip("Note: at 10:30 we met; agenda: budget").is_empty());
    }

    #[test]
    fn validated_pii_is_found() {
        let found = rules(
            "Mail jane.doe+x@example.co.uk or call (415) 555-2671 / +44 20 7946 0958. \
             Card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00, from 203.0.113.7 \
             and 2001:db8::8a2e:370:7334; SSN 123-45-6789.",
            &["us"],
        );
        let want = [
            ("pii.email", "jane.doe+x@example.co.uk"),
            ("pii.phone", "(415) 555-2671"),
            ("pii.phone", "+44 20 7946 0958"),
            ("pii.card", "4111 1111 1111 1111"),
            ("pii.iban", "DE89 3704 0044 0532 0130 00"),
            ("pii.ip", "203.0.113.7"),
            ("pii.ip", "2001:db8::8a2e:370:7334"),
            ("pii.national_id", "123-45-6789"),
        ];
        for (rule, value) in want {
            assert!(
                found.iter().any(|(r, v)| r == rule && v == value),
                "{rule} {value} not in {found:?}"
            );
        }
        assert_eq!(found.len(), want.len(), "{found:?}");
    }

    #[test]
    fn look_alikes_are_not_pii() {
        for text in [
            "Order 4111 1111 1111 1112 shipped",           // fails Luhn
            "Tracking 1Z999AA10123456784, ref 2024-11-30", // ids and dates
            "Upgrade to v1.2.3.4 or version 10.0.0.1",     // version strings
            "Build 3.14.159.26535 of the tool",            // too many parts
            "IBAN DE89 3704 0044 0532 0130 01 is wrong",   // checksum
            "Invoice 123456789 totals 1,234.56 EUR",       // a bare number
            "Call at 12:30:45 on 2024-01-02",              // time and date
            "SSN-like 666-12-3456 and 000-12-3456",        // never issued
            "sha 3f786850e387550fdab836ed7e6dc881de23001b",
            "user@localhost is not an address",
        ] {
            assert_eq!(rules(text, &["us"]), vec![], "{text}");
        }
    }

    #[test]
    fn locales_decide_national_formats() {
        let text = "BSN 111222333, DNI 12345678Z, mobiel 06-12345678";
        assert!(!rules("factuur 111222333", &["nl"])
            .iter()
            .any(|(r, _)| r == "pii.national_id"));
        assert_eq!(rules(text, &["us"]), vec![]);
        let nl = rules(text, &["nl", "es"]);
        assert!(
            nl.contains(&("pii.national_id".into(), "111222333".into())),
            "{nl:?}"
        );
        assert!(
            nl.contains(&("pii.national_id".into(), "12345678Z".into())),
            "{nl:?}"
        );
        assert!(
            nl.contains(&("pii.phone".into(), "06-12345678".into())),
            "{nl:?}"
        );
        assert!(Pii::new(&PiiSpec {
            kinds: vec!["emails".into()],
            locales: vec![]
        })
        .is_err());
    }

    #[test]
    fn checksums() {
        assert!(luhn("79927398713") && !luhn("79927398710"));
        assert!(valid_iban("GB82WEST12345698765432") && !valid_iban("GB82WEST12345698765433"));
        assert!(valid_iban("NL91 ABNA 0417 1643 00"));
        assert!(valid_bsn("111222333") && !valid_bsn("111222334"));
        assert!(valid_dni("X1234567L") && !valid_dni("12345678A"));
    }

    /// Pieces of text around addresses: local parts and labels of every length the
    /// pattern bounds (64, 63, 24) and one past, the characters at their edges, and
    /// the characters that end them.
    fn email_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("@".to_string()),
            Just(".".to_string()),
            Just("-".to_string()),
            proptest::sample::select(vec![
                " ", "_", "%", "+", "..", "@@", ".-", "-.", "\n", ",", "1", "Z"
            ])
            .prop_map(str::to_string),
            "[a-zA-Z0-9]{1,4}",
            "[a-z]{20,26}",
            (60usize..68).prop_map(|n| "a".repeat(n)),
            (62usize..66).prop_map(|n| "b".repeat(n)),
            "[a-z0-9._%+-]{1,8}@[a-z0-9-]{1,6}(\\.[a-zA-Z0-9-]{0,5}){1,4}",
        ];
        proptest::collection::vec(piece, 0..16).prop_map(|p| p.concat())
    }

    proptest! {
        // The hand search finds what the email pattern finds, match for match.
        #[test]
        fn ascii_emails_are_the_patterns_matches(text in email_text()) {
            let want: Vec<Range<usize>> = patterns().email.find_iter(&text).map(|m| m.range()).collect();
            let got: Vec<Range<usize>> = ascii_emails(&text).collect();
            prop_assert_eq!(got, want, "{:?}", text);
        }

        // The block search finds what a byte-by-byte one does, from any start (texts
        // long enough for several blocks, digits sparse or dense, non-ASCII included).
        #[test]
        fn next_digit_is_the_first_digit(
            s in "[a-z \u{e9}\u{ff10}]{0,70}[0-9]?[a-z0-9 ]{0,40}",
            from in 0usize..120,
        ) {
            let b = s.as_bytes();
            let want = b.get(from..).and_then(|r| r.iter().position(u8::is_ascii_digit)).map(|i| from + i);
            prop_assert_eq!(next_digit(b, from), want);
        }

        // The SSN pattern is searched wherever it could match: texts made of its own
        // groups, hyphens and their look-alikes, so that SSNs come often.
        #[test]
        fn the_ssn_shape_is_necessary(pieces in proptest::collection::vec(proptest::sample::select(vec![
            "123", "45", "6789", "-", "1", "12", "1234", " ", "a", "--", "078-05-1120",
        ]), 0..12)) {
            let s = pieces.concat();
            prop_assert!(Shape::of(&s).ssn_middle || !patterns().ssn.is_match(&s), "{s}");
        }

        // A pattern skipped for the text's shape could not have matched: texts made of
        // digits, capitals, dots, hyphens and spaces (the patterns' own characters).
        #[test]
        fn skipped_patterns_cannot_match(s in "[0-9A-Z.\\- a]{0,40}") {
            let p = patterns();
            let shape = Shape::of(&s);
            prop_assert!(shape.iban_start || !p.iban.is_match(&s), "{s}");
            prop_assert!(shape.dotted_digits || !p.ipv4.is_match(&s), "{s}");
            prop_assert!(shape.ssn_middle || !p.ssn.is_match(&s), "{s}");
            prop_assert!(shape.digits >= 7 || !p.dni.is_match(&s), "{s}");
        }

        // The runs grown from digits are the maximal runs of run bytes, by their
        // definition, byte by byte; the digits are all counted.
        #[test]
        fn runs_are_the_maximal_runs_with_digits(s in "[0-9 ()+.\\-\ta-zA-Z]{0,60}") {
            let b = s.as_bytes();
            let mut want = Vec::new();
            let mut i = 0;
            while i < b.len() {
                if !is_run_byte(b[i]) {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < b.len() && is_run_byte(b[i]) {
                    i += 1;
                }
                let digits = b[start..i].iter().filter(|c| c.is_ascii_digit()).count();
                if digits >= 2 && i - start >= 8 {
                    want.push((start..i, digits));
                }
            }
            let shape = Shape::of(&s);
            let got: Vec<_> = shape.runs.iter().map(|r| (r.span.clone(), r.digits)).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(shape.digits, b.iter().filter(|c| c.is_ascii_digit()).count());
        }

        // Any text: no panic, spans on char boundaries inside the text.
        #[test]
        fn digit_patterns_find_the_same_within_runs(
            s in proptest::prop_oneof![
                "[0-9 ()+.\\-\ta-zA-Z]{0,60}",
                "([0-9]{1,5}[ \\-.()+]?|[a-zA-Z]{1,3} ?|\\+|00){0,16}",
            ]
        ) {
            let p = patterns();
            let runs = Shape::of(&s).runs;
            for (re, min) in [(&p.phone, 2), (&p.card, 13), (&p.ssn, 9)] {
                let whole: Vec<_> = re.find_iter(s.as_str()).map(|m| m.range()).collect();
                let found: Vec<_> = within(re, &runs, &s, min).collect();
                proptest::prop_assert_eq!(whole, found, "{:?}", s);
            }
        }

        #[test]
        fn scanning_never_panics(s in "\\PC{0,200}") {
            let p = Pii::new(&PiiSpec { kinds: vec![], locales: LOCALES.iter().map(|s| s.to_string()).collect() }).unwrap();
            for f in p.scan(&s) {
                prop_assert!(s.get(f.span.clone()).is_some());
            }
        }

        // A generated valid card number is found wherever it sits in a sentence.
        #[test]
        fn valid_cards_are_found(body in proptest::collection::vec(0u32..10, 14), pre in "[a-z ]{0,20}") {
            let mut digits: Vec<u32> = vec![4];
            digits.extend(body);
            // The Luhn check digit for the 15 digits so far.
            let sum: u32 = digits.iter().rev().enumerate().map(|(i, d)| if i % 2 == 0 { let x = d * 2; if x > 9 { x - 9 } else { x } } else { *d }).sum();
            digits.push((10 - sum % 10) % 10);
            let card: String = digits.iter().map(|d| char::from_digit(*d, 10).unwrap()).collect();
            let text = format!("{pre} card {card} thanks");
            let found = rules(&text, &["us"]);
            prop_assert!(found.contains(&("pii.card".to_string(), card.clone())), "{:?}", found);
        }
    }
}
