//! Versioned features on the request path.
//!
//! - [`FeatureRegistry`]: what each environment of each feature serves, read from the
//!   store at start, re-read every `[features] refresh_ms` (so a change made by the CLI
//!   or on another replica is served within that time) and at once after a change made
//!   through this replica's admin API. Versions are compiled once and cached: they are
//!   immutable.
//! - [`FeatureRegistry::select_fresh`]: the version a call runs (deployment, split arm).
//! - [`build_request`], [`render_error`], [`feature_fallback`]: what the pipeline's
//!   feature and parse-output stages use to render a version into the request, and to
//!   apply its failure policy. The stages themselves (and shadows, which run through
//!   the same pipeline) live in `pipeline`.
//!
//! Invariants: a call sees one consistent deployment (a snapshot `Arc`); no lock is held
//! across an await; a shadow never delays or changes its primary.

use crate::http_error;
use crate::record::CallRecord;
use llmop_core::codes;
use llmop_core::config::FeaturesConfig;
use llmop_core::{ChatRequest, ChatResponse, GatewayError, Message, Part, ResponseFormat, Role};
use llmop_features::{CompiledFeature, FeatureSpec, RenderError, Rendered};
use llmop_store::{Deployment, DeploymentState, Store, StoreError};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::Semaphore;

/// One environment's deployment, compiled.
pub struct Served {
    seq: i64,
    pub state: DeploymentState,
    arms: Vec<Arc<CompiledFeature>>,
    weights: Vec<u32>,
    shadow: Option<Arc<CompiledFeature>>,
}

type Live = HashMap<String, HashMap<String, Arc<Served>>>;

pub struct FeatureRegistry {
    store: Store,
    live: RwLock<Arc<Live>>,
    versions: Mutex<HashMap<(String, i64), Arc<CompiledFeature>>>,
    shadow_slots: Arc<Semaphore>,
    shadow_capacity: u32,
    pub default_env: String,
    /// The refresh a deployment miss started (when, and the refresh itself, shared by
    /// every miss that comes while it runs or shortly after).
    miss_refresh: std::sync::Mutex<Option<(std::time::Instant, MissRefresh)>>,
}

type MissRefresh = futures::future::Shared<futures::future::BoxFuture<'static, ()>>;

/// Why a registered version could not be had.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error("feature `{feature}` has no version {version}")]
    Missing { feature: String, version: i64 },
    /// The store could not answer: not the caller's fault, and not a 404.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Corrupt(String),
}

impl From<VersionError> for GatewayError {
    fn from(e: VersionError) -> GatewayError {
        match e {
            VersionError::Missing { .. } => GatewayError::NotFound {
                message: e.to_string(),
                code: codes::FEATURE_VERSION_NOT_FOUND,
            },
            VersionError::Store(e) => GatewayError::Unavailable {
                message: format!("the feature store cannot be read right now; retry shortly ({e})"),
                code: codes::STORE_UNAVAILABLE,
            },
            VersionError::Corrupt(m) => GatewayError::Internal(m),
        }
    }
}

/// Misses within this long of a miss-triggered refresh reuse it: however many calls
/// name an undeployed feature, the store is read at most once per this interval.
const MISS_REFRESH_GAP: Duration = Duration::from_millis(50);

/// The version chosen for one call.
pub struct Selected {
    pub version: Arc<CompiledFeature>,
    pub arm: Option<String>,
    pub shadow: Option<Arc<CompiledFeature>>,
}

impl FeatureRegistry {
    pub fn new(store: Store, config: &FeaturesConfig) -> FeatureRegistry {
        FeatureRegistry {
            store,
            live: RwLock::new(Arc::new(HashMap::new())),
            versions: Mutex::new(HashMap::new()),
            shadow_slots: Arc::new(Semaphore::new(config.shadow_concurrency.max(1))),
            shadow_capacity: config.shadow_concurrency.clamp(1, u32::MAX as usize) as u32,
            default_env: config.default_env.clone(),
            miss_refresh: std::sync::Mutex::new(None),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn snapshot(&self) -> Arc<Live> {
        match self.live.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Waits (at most `limit`) for the shadow calls in flight to finish; `false` if some
    /// were still running. New shadows cannot start meanwhile.
    pub async fn drain_shadows(&self, limit: Duration) -> bool {
        matches!(
            tokio::time::timeout(limit, self.shadow_slots.acquire_many(self.shadow_capacity)).await,
            Ok(Ok(_))
        )
    }

    /// A slot for one shadow call; `None` when `shadow_concurrency` are running.
    pub(crate) fn shadow_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.shadow_slots.clone().try_acquire_owned().ok()
    }

    /// Features deployed in at least one environment.
    pub fn deployed(&self) -> Vec<String> {
        self.snapshot().keys().cloned().collect()
    }

    /// Re-reads every deployment; compiles what changed. A deployment that cannot be
    /// compiled (a version missing or corrupt) keeps serving what it served before, and
    /// says so in the log.
    ///
    /// Refreshes may overlap (the poller and an admin change): no lock is held while
    /// reading the store; when the new snapshot is swapped in, an entry never replaces
    /// one with a later change number, so an older read cannot undo a newer one.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let rows = self.store.deployments().await?;
        let current = self.snapshot();
        let mut built: Vec<(String, String, Arc<Served>)> = Vec::new();
        for d in rows {
            let prev = current.get(&d.feature).and_then(|e| e.get(&d.env)).cloned();
            if prev.as_ref().is_some_and(|p| p.seq >= d.seq) {
                continue;
            }
            match self.compile(&d).await {
                Ok(s) => {
                    tracing::info!(feature = %d.feature, env = %d.env, serves = %d.state.describe(), "deployment loaded");
                    built.push((d.feature, d.env, Arc::new(s)));
                }
                Err(e) => {
                    tracing::error!(feature = %d.feature, env = %d.env, error = %e, "cannot load this deployment; still serving the previous one");
                    metrics::counter!("llmop_deployment_load_errors_total").increment(1);
                }
            }
        }
        if built.is_empty() {
            return Ok(());
        }
        let mut guard = match self.live.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut next: Live = (**guard).clone();
        for (feature, env, served) in built {
            let envs = next.entry(feature).or_default();
            if envs.get(&env).is_none_or(|p| p.seq < served.seq) {
                envs.insert(env, served);
            }
        }
        *guard = Arc::new(next);
        Ok(())
    }

    async fn compile(&self, d: &Deployment) -> Result<Served, String> {
        let mut arms = Vec::with_capacity(d.state.arms.len());
        for a in &d.state.arms {
            arms.push(
                self.version(&d.feature, a.version)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        let shadow = match d.state.shadow {
            Some(v) => Some(
                self.version(&d.feature, v)
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        Ok(Served {
            seq: d.seq,
            weights: d.state.arms.iter().map(|a| a.weight).collect(),
            state: d.state.clone(),
            arms,
            shadow,
        })
    }

    /// A registered version, compiled (cached: versions never change).
    pub async fn version(
        &self,
        feature: &str,
        version: i64,
    ) -> Result<Arc<CompiledFeature>, VersionError> {
        let key = (feature.to_string(), version);
        if let Some(v) = self.versions.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(v);
        }
        let stored = self
            .store
            .feature_version(feature, version)
            .await?
            .ok_or_else(|| VersionError::Missing {
                feature: feature.to_string(),
                version,
            })?;
        let spec: FeatureSpec = serde_json::from_value(stored.spec).map_err(|e| {
            VersionError::Corrupt(format!(
                "{feature} v{version}: stored spec does not load: {e}"
            ))
        })?;
        let compiled =
            CompiledFeature::new(spec, version, stored.content_hash).map_err(|errs| {
                let list: Vec<String> = errs.iter().map(ToString::to_string).collect();
                VersionError::Corrupt(format!("{feature} v{version}: {}", list.join("; ")))
            })?;
        let compiled = Arc::new(compiled);
        if let Ok(mut m) = self.versions.lock() {
            m.insert(key, compiled.clone());
        }
        Ok(compiled)
    }

    /// [`Self::select`], re-reading the deployments once when the feature or its
    /// environment is not in the snapshot: a deployment made a moment ago (`llmop
    /// deploy` and then a call) is served at once rather than after `refresh_ms`. The
    /// re-reads of concurrent misses are one (see [`MISS_REFRESH_GAP`]).
    pub async fn select_fresh(
        self: &Arc<Self>,
        feature: &str,
        env: &str,
        stick: Option<&str>,
    ) -> Result<Selected, GatewayError> {
        match self.select(feature, env, stick) {
            Err(GatewayError::NotFound { .. }) => {
                self.refresh_on_miss().await;
                self.select(feature, env, stick)
            }
            found => found,
        }
    }

    async fn refresh_on_miss(self: &Arc<Self>) {
        use futures::FutureExt;
        let refresh = {
            let mut slot = self.miss_refresh.lock().unwrap_or_else(|p| p.into_inner());
            match &*slot {
                Some((started, running))
                    if running.peek().is_none() || started.elapsed() < MISS_REFRESH_GAP =>
                {
                    running.clone()
                }
                _ => {
                    let this = self.clone();
                    let running: MissRefresh = async move {
                        if let Err(e) = this.refresh().await {
                            tracing::warn!(error = %e, "re-reading deployments after a miss failed");
                        }
                    }
                    .boxed()
                    .shared();
                    *slot = Some((std::time::Instant::now(), running.clone()));
                    running
                }
            }
        };
        refresh.await;
    }

    /// The version serving `feature` in `env` for this caller: a split picks an arm,
    /// sticky per `stick` (the user, else the session), else at random.
    pub fn select(
        &self,
        feature: &str,
        env: &str,
        stick: Option<&str>,
    ) -> Result<Selected, GatewayError> {
        let live = self.snapshot();
        let Some(envs) = live.get(feature) else {
            return Err(GatewayError::NotFound {
                message: format!(
                    "feature `{feature}` is not deployed in any environment (push it, then `llmop deploy {feature} <version> --env {env}`)"
                ),
                code: codes::FEATURE_NOT_FOUND,
            });
        };
        let Some(served) = envs.get(env) else {
            let mut known: Vec<&str> = envs.keys().map(String::as_str).collect();
            known.sort_unstable();
            return Err(GatewayError::NotFound {
                message: format!(
                    "feature `{feature}` is not deployed in environment `{env}` (deployed in: {})",
                    known.join(", ")
                ),
                code: codes::FEATURE_NOT_DEPLOYED,
            });
        };
        let i = if served.arms.len() > 1 {
            llmop_features::pick_arm(
                &served.weights,
                &format!("{feature}\0{env}"),
                stick,
                rand::random(),
            )
        } else {
            0
        };
        Ok(Selected {
            version: served.arms[i].clone(),
            arm: (served.arms.len() > 1).then(|| format!("v{}", served.arms[i].version)),
            shadow: served.shadow.clone(),
        })
    }
}

/// What a feature call carries from preparation to the end (and to its shadow).
pub struct FeatureCall {
    pub version: Arc<CompiledFeature>,
    pub shadow: Option<Arc<CompiledFeature>>,
    pub env: String,
    /// The variables as the caller gave them (before defaults): a shadow version binds
    /// them with its own declarations.
    pub given: Map<String, Value>,
}

/// A rendering error as the client's 400, naming the variable and where it comes from
/// (`metadata.ticket` on the chat endpoints, `variables.ticket` on invoke).
pub(crate) fn render_error(feature: &CompiledFeature, e: &RenderError, from: &str) -> GatewayError {
    let code = match e {
        RenderError::Missing(_) => codes::MISSING_VARIABLE,
        RenderError::WrongType { .. } => codes::INVALID_VARIABLE,
        RenderError::Unknown(_) => codes::UNKNOWN_VARIABLE,
        RenderError::Template { .. } => codes::TEMPLATE_ERROR,
    };
    GatewayError::InvalidRequest {
        message: format!("feature `{}` v{}: {e}", feature.name(), feature.version),
        param: e.variable().map(|v| format!("{from}.{v}")),
        code,
    }
}

/// The request a version sends: its rendered messages, its route and parameters, the
/// caller's other fields (tools, stream) kept. JSON parsers ask for JSON
/// (`response_format`) unless the caller asked for something.
pub(crate) fn build_request(
    v: &CompiledFeature,
    rendered: &Rendered,
    base: ChatRequest,
) -> ChatRequest {
    let mut req = base;
    let spec = &v.spec;
    req.model = spec
        .route
        .clone()
        .or_else(|| spec.model.clone())
        .unwrap_or_default();
    req.messages = rendered
        .messages
        .iter()
        .map(|(role, text)| {
            Message::text(
                match role {
                    llmop_features::Role::System => Role::System,
                    llmop_features::Role::User => Role::User,
                    llmop_features::Role::Assistant => Role::Assistant,
                },
                text.clone(),
            )
        })
        .collect();
    // Messages the feature marks as a cacheable prefix.
    req.prompt_cache.marks = spec
        .messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m.cache)
        .map(|(i, _)| llmop_core::CacheMark {
            at: llmop_core::MarkAt::Part {
                message: i,
                part: 0,
            },
            control: serde_json::json!({"type": "ephemeral"}),
        })
        .take(4)
        .collect();
    let p = &spec.params;
    if p.temperature.is_some() {
        req.params.temperature = p.temperature;
    }
    if p.top_p.is_some() {
        req.params.top_p = p.top_p;
    }
    if p.max_tokens.is_some() {
        req.params.max_tokens = p.max_tokens;
    }
    if p.seed.is_some() {
        req.params.seed = p.seed;
    }
    if !p.stop.is_empty() {
        req.params.stop.clone_from(&p.stop);
    }
    if req.response_format.is_none() && spec.output.parser == llmop_features::Parser::Json {
        req.response_format = Some(match &spec.output.schema {
            Some(schema) => ResponseFormat::JsonSchema {
                name: spec.name.replace('-', "_"),
                schema: schema.clone(),
                strict: None,
            },
            None => ResponseFormat::JsonObject,
        });
    }
    // The variables came in metadata; they are not the provider's business.
    req.extra.remove("metadata");
    req.metadata = Map::new();
    req
}

/// The body of `POST /v1/features/{name}/invoke`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvokeBody {
    #[serde(default)]
    pub variables: Map<String, Value>,
    pub env: Option<String>,
    pub user: Option<String>,
    pub session: Option<String>,
    pub tags: Option<std::collections::BTreeMap<String, String>>,
    /// Runs this registered version instead of the deployment (debugging, replay).
    pub version: Option<i64>,
}

pub(crate) fn set_parse(rec: &mut CallRecord, status: &'static str, parsed: Option<Value>) {
    if let Some(f) = rec.feature.as_mut() {
        f.parse_status = Some(status);
        f.parsed = parsed;
    }
}

pub(crate) fn parse_failed(v: &CompiledFeature, problem: &str) -> GatewayError {
    GatewayError::Unprocessable {
        message: format!(
            "feature `{}` v{}: the model's output could not be parsed: {problem}",
            v.name(),
            v.version
        ),
        code: codes::OUTPUT_PARSE_FAILED,
    }
}

/// Every target failed: the feature's own `fallback_response`, if it has one and the
/// failure is not the request's fault, as a degraded answer.
pub(crate) fn feature_fallback(
    v: &CompiledFeature,
    e: GatewayError,
    rec: &mut CallRecord,
) -> Result<ChatResponse, GatewayError> {
    let client_fault = http_error::status_of(&e).is_client_error()
        && !matches!(e.code(), codes::RATE_LIMITED | codes::UPSTREAM_RATE_LIMITED);
    match &v.spec.fallback_response {
        Some(text) if !client_fault => {
            rec.degraded = true;
            rec.error_code = Some(e.code());
            Ok(ChatResponse {
                id: String::new(),
                model: String::new(),
                created: llmop_wire::unix_now(),
                parts: vec![Part::Text(text.clone())],
                finish_reason: llmop_core::FinishReason::Stop,
                usage: None,
                details: Default::default(),
            })
        }
        _ => Err(e),
    }
}
