//! Model resolution: `model` names a route (`smart`) or a provider and model
//! (`openai/gpt-4o`). The answer is an ordered list of targets to try.

use crate::breaker::Breaker;
use crate::resilience::{LatencyStats, RetryPolicy};
use llmop_core::codes;
use llmop_core::config::{Config, ParamOverrides, Strategy};
use llmop_core::GatewayError;
use llmop_providers::{Provider, Providers};
use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// One provider + model to call.
#[derive(Clone)]
pub struct Target {
    pub provider: Arc<Provider>,
    pub model: Arc<str>,
    pub weight: u32,
    /// The route's retry settings and this target's retry budget; `None`: no retries.
    pub retry: Option<Arc<RetryPolicy>>,
    /// Parameters this target sets whatever the client asked.
    pub params: Option<Arc<ParamOverrides>>,
    /// Longest wait for this target's first token in one attempt.
    pub first_token_timeout: Option<Duration>,
    /// Recent latency and errors, kept for `least_latency` routes.
    pub stats: Option<Arc<LatencyStats>>,
    /// This target's circuit breaker on this route; `None`: no breaker.
    pub breaker: Option<Arc<Breaker>>,
    /// USD per million tokens; `None`: unknown (the call's cost is then unknown).
    pub price: Option<llmop_cost::Price>,
    /// The provider's quota for this target: (requests, tokens) per minute.
    pub quota: Option<(Option<u32>, Option<u32>)>,
    /// The embedding model this target serves (its `embedding_model`, else its
    /// `model`): embeddings fall back only between targets with the same one.
    pub embedding: Arc<str>,
}

/// A cascade route's acceptance checks, compiled once.
pub struct Accept {
    json: bool,
    schema: Option<jsonschema::Validator>,
    min_chars: Option<usize>,
    reject: Vec<regex::Regex>,
    complete: bool,
}

impl Accept {
    pub fn new(c: &llmop_core::config::AcceptConfig) -> Result<Accept, String> {
        let schema = match &c.json_schema {
            Some(s) => {
                Some(jsonschema::validator_for(s).map_err(|e| format!("accept.json_schema: {e}"))?)
            }
            None => None,
        };
        let reject = c
            .reject_patterns
            .iter()
            .map(|p| {
                regex::RegexBuilder::new(p)
                    .case_insensitive(true)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| format!("accept.reject_patterns: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Accept {
            json: c.json || c.json_schema.is_some(),
            schema,
            min_chars: c.min_chars,
            reject,
            complete: c.complete,
        })
    }

    /// `Err(reason)` when the answer is not good enough to take: the reason is recorded
    /// on the attempt (`retry_reason`).
    pub fn check(&self, resp: &llmop_core::ChatResponse) -> Result<(), &'static str> {
        if self.complete && resp.finish_reason == llmop_core::FinishReason::Length {
            return Err("cascade_incomplete");
        }
        let has_calls = resp
            .parts
            .iter()
            .any(|p| matches!(p, llmop_core::Part::ToolCall(_)));
        let text = resp.text();
        if has_calls && text.trim().is_empty() {
            // A tool call is an answer of its own kind: the text checks do not apply.
            return Ok(());
        }
        if self
            .min_chars
            .is_some_and(|m| text.trim().chars().count() < m)
        {
            return Err("cascade_too_short");
        }
        if self.reject.iter().any(|r| r.is_match(&text)) {
            return Err("cascade_rejected_pattern");
        }
        if self.json {
            let v: serde_json::Value = match serde_json::from_str(text.trim()) {
                Ok(v) => v,
                Err(_) => return Err("cascade_not_json"),
            };
            if self.schema.as_ref().is_some_and(|s| !s.is_valid(&v)) {
                return Err("cascade_schema_mismatch");
            }
        }
        Ok(())
    }
}

pub struct Route {
    /// A cascade's acceptance checks.
    pub accept: Option<Arc<Accept>>,
    pub name: Arc<str>,
    pub strategy: Strategy,
    pub targets: Vec<Target>,
    pub timeout: Option<Duration>,
    pub fallback: Option<Arc<str>>,
    pub fallback_on_content_policy: bool,
    /// An embeddings route (`embeddings = true`).
    pub embeddings: bool,
}

/// What a request's `model` resolved to.
pub struct Resolved<'a> {
    /// The route's name, or `None` for `provider/model`.
    pub route: Option<&'a str>,
    /// Targets in the order to try them.
    pub targets: Vec<Target>,
    pub timeout: Option<Duration>,
    /// The route's degraded answer, when every target failed.
    pub fallback: Option<Arc<str>>,
    pub fallback_on_content_policy: bool,
    /// A cascade route's acceptance checks.
    pub accept: Option<Arc<Accept>>,
}

pub struct Router {
    routes: HashMap<String, Route>,
    providers: Providers,
    pricing: llmop_cost::Pricing,
}

impl Router {
    pub fn new(config: &Config, providers: &Providers) -> Result<Router, String> {
        let pricing = llmop_cost::Pricing::new(&config.prices);
        let mut routes = HashMap::with_capacity(config.routes.len());
        for (name, rc) in &config.routes {
            let mut targets = Vec::with_capacity(rc.targets.len());
            for t in &rc.targets {
                let provider = providers
                    .get(&t.provider)
                    .ok_or_else(|| format!("route `{name}`: unknown provider `{}`", t.provider))?;
                targets.push(Target {
                    provider: provider.clone(),
                    model: Arc::from(t.model.as_str()),
                    weight: t.weight,
                    retry: rc
                        .retry
                        .filter(|r| r.attempts > 0)
                        .map(|r| Arc::new(RetryPolicy::new(r))),
                    params: t.params.clone().map(Arc::new),
                    first_token_timeout: t
                        .first_token_timeout_ms
                        .or(rc.first_token_timeout_ms)
                        .map(Duration::from_millis),
                    stats: (rc.strategy == Strategy::LeastLatency)
                        .then(|| Arc::new(LatencyStats::default())),
                    breaker: rc.circuit_breaker.map(|b| {
                        Arc::new(Breaker::new(
                            b,
                            format!("{name}:{}/{}", t.provider, t.model),
                        ))
                    }),
                    price: pricing.price(&t.provider, provider.kind(), &t.model),
                    quota: (t.rpm.is_some() || t.tpm.is_some()).then_some((t.rpm, t.tpm)),
                    embedding: Arc::from(t.embedding_identity()),
                });
            }
            routes.insert(
                name.clone(),
                Route {
                    accept: match (&rc.accept, rc.strategy) {
                        (a, Strategy::Cascade) => Some(Arc::new(
                            Accept::new(&a.clone().unwrap_or_default())
                                .map_err(|e| format!("routes.{name}.{e}"))?,
                        )),
                        _ => None,
                    },
                    name: Arc::from(name.as_str()),
                    strategy: rc.strategy,
                    targets,
                    timeout: rc.timeout_ms.map(Duration::from_millis),
                    fallback: rc
                        .fallback_response
                        .as_ref()
                        .map(|f| Arc::from(f.text.as_str())),
                    fallback_on_content_policy: rc.fallback_on_content_policy,
                    embeddings: rc.embeddings,
                },
            );
        }
        Ok(Router {
            routes,
            providers: providers.clone(),
            pricing,
        })
    }

    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.values()
    }

    pub fn resolve(&self, model: &str) -> Result<Resolved<'_>, GatewayError> {
        if let Some(route) = self.routes.get(model) {
            return Ok(Resolved {
                route: Some(&route.name),
                targets: order(route),
                timeout: route.timeout,
                fallback: route.fallback.clone(),
                fallback_on_content_policy: route.fallback_on_content_policy,
                accept: route.accept.clone(),
            });
        }
        if let Some((provider, m)) = model.split_once('/') {
            if let Some(p) = self.providers.get(provider) {
                if m.is_empty() {
                    return Err(GatewayError::invalid(
                        format!("`{model}` names no model after the provider"),
                        Some("model".into()),
                    ));
                }
                return Ok(Resolved {
                    route: None,
                    targets: vec![Target {
                        provider: p.clone(),
                        model: Arc::from(m),
                        weight: 1,
                        retry: None,
                        params: None,
                        first_token_timeout: None,
                        stats: None,
                        breaker: None,
                        price: self.pricing.price(provider, p.kind(), m),
                        quota: None,
                        embedding: Arc::from(m),
                    }],
                    timeout: None,
                    fallback: None,
                    fallback_on_content_policy: false,
                    accept: None,
                });
            }
        }
        Err(GatewayError::NotFound {
            message: format!(
                "unknown model `{model}`: name a route, or a configured provider as `<provider>/<model>`"
            ),
            code: codes::MODEL_NOT_FOUND,
        })
    }
}

/// Targets in the order the route's strategy tries them.
fn order(route: &Route) -> Vec<Target> {
    let mut targets = route.targets.clone();
    if route.strategy == Strategy::Weighted && targets.len() > 1 {
        let total: u64 = targets.iter().map(|t| t.weight as u64).sum();
        if total > 0 {
            let mut pick = rand::thread_rng().gen_range(0..total);
            let mut first = 0;
            for (i, t) in targets.iter().enumerate() {
                if pick < t.weight as u64 {
                    first = i;
                    break;
                }
                pick -= t.weight as u64;
            }
            let chosen = targets.remove(first);
            targets.insert(0, chosen);
        }
    }
    if route.strategy == Strategy::LeastLatency && targets.len() > 1 {
        let mut rng = rand::thread_rng();
        if rng.gen_bool(EXPLORE) {
            // Now and then another target goes first, so that an estimate that is only
            // old (a target that was slow and recovered) gets refreshed.
            let i = rng.gen_range(0..targets.len());
            let chosen = targets.remove(i);
            targets.insert(0, chosen);
        } else {
            let score = |t: &Target| t.stats.as_ref().map_or(0.0, |s| s.score());
            targets.sort_by(|a, b| score(a).total_cmp(&score(b)));
        }
    }
    targets
}

/// Share of `least_latency` calls that try a random target first.
const EXPLORE: f64 = 0.05;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn router(text: &str) -> Router {
        let c = Config::parse(text, Path::new("t.toml")).unwrap();
        let p = Providers::from_config(&c).unwrap();
        Router::new(&c, &p).unwrap()
    }

    const CONF: &str = "[providers.a]\nkind = \"mock\"\n[providers.b]\nkind = \"mock\"\n\
        [routes.r]\nstrategy = \"weighted\"\ntargets = [{ provider = \"a\", model = \"x\", weight = 3 }, { provider = \"b\", model = \"y\", weight = 1 }]\n";

    #[test]
    fn resolves_routes_and_direct_models() {
        let r = router(CONF);
        let d = r.resolve("a/some-model").unwrap();
        assert_eq!(&*d.targets[0].model, "some-model");
        assert!(d.route.is_none());
        assert!(matches!(
            r.resolve("nope"),
            Err(GatewayError::NotFound { .. })
        ));
        assert!(matches!(
            r.resolve("zzz/m"),
            Err(GatewayError::NotFound { .. })
        ));
        assert!(matches!(
            r.resolve("a/"),
            Err(GatewayError::InvalidRequest { .. })
        ));
    }

    #[test]
    fn weighted_order_follows_weights_and_keeps_fallbacks() {
        let r = router(CONF);
        let mut first_a = 0;
        for _ in 0..4000 {
            let res = r.resolve("r").unwrap();
            assert_eq!(res.targets.len(), 2);
            if res.targets[0].provider.name() == "a" {
                first_a += 1;
            }
        }
        // 3:1 weights: expect ~3000 of 4000.
        assert!((2800..3200).contains(&first_a), "{first_a}");
    }
}
