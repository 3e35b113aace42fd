//! llmop-cost: what a call costs.
//!
//! - [`Price`]: USD per million tokens for input, output, cached input (cache reads) and
//!   cache writes, and [`Price::cost`], the cost of one call's [`Usage`].
//! - [`Pricing`]: where a (provider, model) gets its price: a `[prices]` override from
//!   the config (`"<provider>/<model>"`, or `"<provider>/*"` for every model of a
//!   provider, e.g. a self-hosted server at 0), else the built-in, dated catalog
//!   (`prices.toml`: OpenAI, Anthropic, Gemini) by the provider's kind. A model with no
//!   price has an *unknown* cost (`None`), never 0.
//!
//! Usage is normalized by `llmop-wire` for every provider: `input_tokens` counts every
//! prompt token, cache reads (`cached_input_tokens`) and cache writes
//! (`cache_write_tokens`) included, so one formula serves all providers.
//!
//! Invariant: pure; a cost is never negative and never decreases when tokens are added.

use llmop_core::config::{PriceConfig, ProviderKind};
use llmop_core::Usage;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Cache reads; the input price when unset.
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Cache writes (Anthropic); the input price when unset.
    #[serde(default)]
    pub cache_write: Option<f64>,
}

impl From<&PriceConfig> for Price {
    fn from(p: &PriceConfig) -> Self {
        Price {
            input: p.input,
            output: p.output,
            cached_input: p.cached_input,
            cache_write: p.cache_write,
        }
    }
}

/// `usd` rounded to a millionth of a micro-dollar: the sums of per-token prices carry
/// float noise (`0.0000032999999999999997`) that no price has. Far below any price's
/// precision, so rounding changes no cost that matters.
pub fn round_usd(usd: f64) -> f64 {
    if !usd.is_finite() {
        return usd;
    }
    let r = (usd * 1e12).round() / 1e12;
    if r == 0.0 {
        0.0
    } else {
        r
    }
}

/// An amount of USD as the shortest decimal that reads back as the rounded amount
/// (`0.0000033`), never in exponent form: for headers, tables and messages.
pub fn format_usd(usd: f64) -> String {
    round_usd(usd).to_string()
}

impl Price {
    /// The cost in USD of a call that used `u`.
    pub fn cost(&self, u: &Usage) -> f64 {
        let cached = u.cached_input_tokens.min(u.input_tokens);
        let written = u.cache_write_tokens.min(u.input_tokens - cached);
        let plain = u.input_tokens - cached - written;
        let per = |tokens: u64, usd_per_million: f64| tokens as f64 * usd_per_million / 1e6;
        per(plain, self.input)
            + per(cached, self.cached_input.unwrap_or(self.input))
            + per(written, self.cache_write.unwrap_or(self.input))
            + per(u.output_tokens, self.output)
    }

    /// [`Price::cost`], rounded with [`round_usd`]: what is shown and stored.
    pub fn cost_rounded(&self, u: &Usage) -> f64 {
        round_usd(self.cost(u))
    }
}

#[derive(Debug, Deserialize)]
struct CatalogFile {
    as_of: String,
    #[serde(default)]
    openai: BTreeMap<String, Price>,
    #[serde(default)]
    anthropic: BTreeMap<String, Price>,
    #[serde(default)]
    gemini: BTreeMap<String, Price>,
}

/// The built-in catalog, parsed once.
pub struct Catalog {
    pub as_of: String,
    openai: BTreeMap<String, Price>,
    anthropic: BTreeMap<String, Price>,
    gemini: BTreeMap<String, Price>,
}

const CATALOG: &str = include_str!("../prices.toml");

impl Catalog {
    pub fn builtin() -> &'static Catalog {
        static C: OnceLock<Catalog> = OnceLock::new();
        C.get_or_init(|| {
            // The file ships inside the binary and a unit test parses it: it cannot fail
            // at run time, but an empty catalog beats a panic if it ever did.
            match toml::from_str::<CatalogFile>(CATALOG) {
                Ok(f) => Catalog {
                    as_of: f.as_of,
                    openai: f.openai,
                    anthropic: f.anthropic,
                    gemini: f.gemini,
                },
                Err(_) => Catalog {
                    as_of: "unavailable".into(),
                    openai: BTreeMap::new(),
                    anthropic: BTreeMap::new(),
                    gemini: BTreeMap::new(),
                },
            }
        })
    }

    fn table(&self, kind: ProviderKind) -> Option<&BTreeMap<String, Price>> {
        match kind {
            ProviderKind::Openai => Some(&self.openai),
            ProviderKind::Anthropic => Some(&self.anthropic),
            ProviderKind::Gemini => Some(&self.gemini),
            _ => None,
        }
    }

    /// A model's catalog price: its own entry, or that of the model it is a dated
    /// snapshot or alias of (`gpt-4o-2024-08-06`, `claude-sonnet-4-5-20250929`,
    /// `…-latest`). Other suffixes (`gpt-4o-audio-preview`) are not guessed.
    pub fn price(&self, kind: ProviderKind, model: &str) -> Option<Price> {
        let table = self.table(kind)?;
        let model = model.strip_prefix("models/").unwrap_or(model);
        if let Some(p) = table.get(model) {
            return Some(*p);
        }
        let base = strip_version_suffix(model)?;
        table.get(base).copied()
    }

    /// Every (kind, model, price), for `llmop prices` and the docs.
    pub fn entries(&self) -> impl Iterator<Item = (&'static str, &str, &Price)> {
        self.openai
            .iter()
            .map(|(m, p)| ("openai", m.as_str(), p))
            .chain(
                self.anthropic
                    .iter()
                    .map(|(m, p)| ("anthropic", m.as_str(), p)),
            )
            .chain(self.gemini.iter().map(|(m, p)| ("gemini", m.as_str(), p)))
    }
}

/// `name-2024-08-06`, `name-20250929`, `name-latest`, `name-001` (Gemini's stable
/// version ids) → `name`.
fn strip_version_suffix(model: &str) -> Option<&str> {
    let (base, suffix) = model.rsplit_once('-')?;
    let all_digits = suffix.bytes().all(|b| b.is_ascii_digit());
    if suffix == "latest" || (all_digits && (suffix.len() == 8 || suffix.len() == 3)) {
        return Some(base);
    }
    // -YYYY-MM-DD: three numeric parts.
    let mut parts = model.rsplitn(4, '-');
    let (d, m, y, base) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    (digits(d, 2) && digits(m, 2) && digits(y, 4)).then_some(base)
}

/// Where a call's price comes from: config overrides, then the catalog.
#[derive(Default)]
pub struct Pricing {
    /// `"<provider>/<model>"` → price.
    exact: HashMap<String, Price>,
    /// `"<provider>"` → price of every model of that provider (`"<provider>/*"`).
    wildcard: HashMap<String, Price>,
}

impl Pricing {
    /// From the config's `[prices]` (keys already validated by the config).
    pub fn new(prices: &BTreeMap<String, PriceConfig>) -> Pricing {
        let mut p = Pricing::default();
        for (key, price) in prices {
            match key.strip_suffix("/*") {
                Some(provider) => {
                    p.wildcard.insert(provider.to_string(), price.into());
                }
                None => {
                    p.exact.insert(key.clone(), price.into());
                }
            }
        }
        p
    }

    /// The price of `model` on the configured provider `provider` (of `kind`).
    pub fn price(&self, provider: &str, kind: ProviderKind, model: &str) -> Option<Price> {
        if !self.exact.is_empty() {
            let key = format!("{provider}/{model}");
            if let Some(p) = self.exact.get(&key) {
                return Some(*p);
            }
        }
        if let Some(p) = self.wildcard.get(provider) {
            return Some(*p);
        }
        Catalog::builtin().price(kind, model)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn money_prints_without_float_noise() {
        let noisy = 0.0000032999999999999997_f64;
        assert_eq!(format_usd(noisy), "0.0000033");
        assert_eq!(format_usd(0.1 + 0.2), "0.3");
        assert_eq!(format_usd(0.0), "0");
        assert_eq!(format_usd(12.5), "12.5");
        assert_eq!(format_usd(-0.0), "0");
        // A real call: 1,234 input and 567 output tokens at $2.50 / $10 per million.
        let p = Price {
            input: 2.5,
            output: 10.0,
            cached_input: None,
            cache_write: None,
        };
        let u = Usage {
            input_tokens: 1234,
            output_tokens: 567,
            ..Usage::default()
        };
        assert_eq!(format_usd(p.cost(&u)), "0.008755");
        assert_eq!(p.cost_rounded(&u), 0.008755);
    }

    proptest::proptest! {
        /// Whatever the amount, the printed form parses back to the rounded amount and
        /// has no exponent.
        #[test]
        fn printed_money_round_trips(v in 0.0f64..1e6) {
            let s = format_usd(v);
            proptest::prop_assert!(!s.contains('e'));
            proptest::prop_assert_eq!(s.parse::<f64>().unwrap(), round_usd(v));
        }
    }
    use super::*;
    use proptest::prelude::*;

    fn usage(input: u64, cached: u64, write: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cached_input_tokens: cached,
            cache_write_tokens: write,
            reasoning_tokens: 0,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn the_catalog_parses_and_is_dated() {
        let c = Catalog::builtin();
        assert_ne!(c.as_of, "unavailable");
        assert!(c.entries().count() >= 25);
        for (kind, model, p) in c.entries() {
            assert!(p.input > 0.0 && p.output >= p.input, "{kind}/{model}");
            assert!(
                p.cached_input.unwrap_or(p.input) <= p.input,
                "{kind}/{model}"
            );
        }
    }

    #[test]
    fn gemini_version_ids_find_their_model() {
        let c = Catalog::builtin();
        let p = c
            .price(ProviderKind::Gemini, "gemini-2.0-flash-001")
            .unwrap();
        assert_eq!(Some(p), c.price(ProviderKind::Gemini, "gemini-2.0-flash"));
        assert!(c
            .price(ProviderKind::Gemini, "models/gemini-2.5-flash-lite-001")
            .is_some());
    }

    /// Every model the docs and the README name has a catalog price (so a tour that
    /// uses one never shows cost unknown).
    #[test]
    fn every_model_the_docs_name_is_priced() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = vec![root.join("README.md")];
        for e in std::fs::read_dir(root.join("docs")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "md") {
                files.push(p);
            }
        }
        let c = Catalog::builtin();
        let mut checked = 0;
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for word in
                text.split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '-' || ch == '.'))
            {
                let word = word.trim_end_matches('.');
                let kind = if word.starts_with("gpt-")
                    || (word.starts_with('o')
                        && word.len() > 1
                        && word[1..2].chars().all(|x| x.is_ascii_digit())
                        && word.contains('-'))
                {
                    ProviderKind::Openai
                } else if word.starts_with("claude-") {
                    ProviderKind::Anthropic
                } else if word.starts_with("gemini-") {
                    ProviderKind::Gemini
                } else {
                    continue;
                };
                // Placeholders (`claude-x`) and families (`gemini-3`) are not models.
                if word.matches('-').count() < 1 || word.ends_with('-') || word == "gemini-3" {
                    continue;
                }
                assert!(
                    c.price(kind, word).is_some(),
                    "{} names `{word}`, which the catalog does not price",
                    f.display()
                );
                checked += 1;
            }
        }
        assert!(checked > 0);
    }

    #[test]
    fn dated_snapshots_and_aliases_find_their_model() {
        let c = Catalog::builtin();
        let gpt4o = c.price(ProviderKind::Openai, "gpt-4o").unwrap();
        assert_eq!(
            c.price(ProviderKind::Openai, "gpt-4o-2024-08-06"),
            Some(gpt4o)
        );
        assert_ne!(
            c.price(ProviderKind::Openai, "gpt-4o-mini-2024-07-18"),
            Some(gpt4o)
        );
        assert!(c
            .price(ProviderKind::Openai, "gpt-4o-audio-preview")
            .is_none());
        assert_eq!(
            c.price(ProviderKind::Anthropic, "claude-sonnet-4-5-20250929"),
            c.price(ProviderKind::Anthropic, "claude-sonnet-4-5")
        );
        assert!(c
            .price(ProviderKind::Gemini, "models/gemini-2.5-flash")
            .is_some());
        assert!(c.price(ProviderKind::Mock, "gpt-4o").is_none());
        assert!(c.price(ProviderKind::Openai, "my-finetune").is_none());
    }

    #[test]
    fn costs_by_family_from_real_usage_blocks() {
        let c = Catalog::builtin();
        // OpenAI: prompt_tokens 19 of which cached 4, completion 10 (gpt-4o).
        let p = c.price(ProviderKind::Openai, "gpt-4o").unwrap();
        let want = (15.0 * 2.50 + 4.0 * 1.25 + 10.0 * 10.00) / 1e6;
        assert!(close(p.cost(&usage(19, 4, 0, 10)), want));
        // Anthropic: input_tokens 10 + cache_read 90 + cache_creation 5 (normalized to
        // input 105), output 3 (claude-sonnet-4-5).
        let p = c
            .price(ProviderKind::Anthropic, "claude-sonnet-4-5")
            .unwrap();
        let want = (10.0 * 3.00 + 90.0 * 0.30 + 5.0 * 3.75 + 3.0 * 15.00) / 1e6;
        assert!(close(p.cost(&usage(105, 90, 5, 3)), want));
        // Gemini: promptTokenCount 20 incl. cachedContentTokenCount 8, 5 out.
        let p = c.price(ProviderKind::Gemini, "gemini-2.0-flash").unwrap();
        let want = (12.0 * 0.10 + 8.0 * 0.025 + 5.0 * 0.40) / 1e6;
        assert!(close(p.cost(&usage(20, 8, 0, 5)), want));
    }

    #[test]
    fn overrides_win_and_wildcards_price_whole_providers() {
        let mut prices = BTreeMap::new();
        let cfg = |i: f64, o: f64| PriceConfig {
            input: i,
            output: o,
            cached_input: None,
            cache_write: None,
        };
        prices.insert("openai/gpt-4o".to_string(), cfg(1.0, 2.0));
        prices.insert("local/*".to_string(), cfg(0.0, 0.0));
        let p = Pricing::new(&prices);
        assert_eq!(
            p.price("openai", ProviderKind::Openai, "gpt-4o")
                .unwrap()
                .input,
            1.0
        );
        // Another provider of the same kind still gets the catalog.
        assert_eq!(
            p.price("azure", ProviderKind::Openai, "gpt-4o")
                .unwrap()
                .input,
            2.5
        );
        assert_eq!(
            p.price("local", ProviderKind::Openai, "qwen")
                .unwrap()
                .output,
            0.0
        );
        assert!(p.price("sim", ProviderKind::Mock, "echo").is_none());
    }

    proptest! {
        #[test]
        fn cost_is_never_negative_and_grows_with_tokens(
            input in 0u64..10_000_000, cached in 0u64..10_000_000, write in 0u64..10_000_000,
            output in 0u64..10_000_000, more in 1u64..1_000_000,
        ) {
            let p = Price { input: 3.0, output: 15.0, cached_input: Some(0.3), cache_write: Some(3.75) };
            let base = p.cost(&usage(input, cached, write, output));
            prop_assert!(base >= 0.0 && base.is_finite());
            prop_assert!(p.cost(&usage(input, cached, write, output + more)) > base);
            prop_assert!(p.cost(&usage(input + more, cached, write, output)) > base);
            // Reading from the cache is never dearer than not.
            let c = cached.min(input);
            prop_assert!(p.cost(&usage(input, c, 0, output)) <= p.cost(&usage(input, 0, 0, output)) + 1e-12);
        }
    }
}
