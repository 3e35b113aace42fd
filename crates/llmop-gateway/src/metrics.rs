//! Metrics: the registry behind `GET /metrics` (Prometheus text format; served by
//! `handlers::metrics`) and the descriptions of every metric llmop exports.
//!
//! Metrics go through the `metrics` facade into `metrics-exporter-prometheus`, which
//! renders them. Counters that already live as atomics elsewhere (the record writer's)
//! are copied in at scrape time rather than counted twice on the request path.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Installs the process-wide recorder; `None` if one is already installed (tests that
/// start several gateways in one process).
pub fn install() -> Option<PrometheusHandle> {
    // The GenAI client histograms, with the buckets the conventions advise.
    let builder = PrometheusBuilder::new();
    let builder = builder
        .set_buckets_for_metric(
            Matcher::Full("gen_ai_client_token_usage".into()),
            llmop_telemetry::TOKEN_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("gen_ai_client_operation_duration_seconds".into()),
                llmop_telemetry::DURATION_BUCKETS,
            )
        })
        .unwrap_or_else(|_| PrometheusBuilder::new());
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).ok()?;
    describe();
    Some(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        "gen_ai_client_operation_duration_seconds",
        metrics::Unit::Seconds,
        "GenAI operation duration (OpenTelemetry GenAI conventions), from the records"
    );
    describe_histogram!(
        "gen_ai_client_token_usage",
        "Tokens per GenAI operation by gen_ai_token_type (input, output), from the records"
    );
    describe_counter!(
        "llmop_telemetry_spans_total",
        "OpenTelemetry spans by outcome: exported, dropped_queue_full, dropped_export_failed, dropped_rejected, not_sampled"
    );
    describe_counter!(
        "llmop_feature_parse_failures_total",
        "Feature outputs that did not pass their parser (before the parse-failure policy), by feature"
    );
    describe_counter!(
        "llmop_cost_unknown_total",
        "Calls with usage but no price (cost recorded as unknown, not 0), by provider and model: add a [prices] entry"
    );
    describe_counter!(
        "llmop_budget_exceeded_total",
        "Calls refused by a hard budget (429 budget_exceeded)"
    );
    describe_counter!(
        "llmop_budget_alerts_total",
        "Soft budget limits reached (one alert per window per scope)"
    );
    describe_counter!(
        "llmop_session_budget_exceeded_total",
        "Agent-loop calls refused by a session budget (429 session_budget_exceeded)"
    );
    describe_counter!(
        "llmop_rate_limited_total",
        "Calls refused by a key's rpm/tpm limit, by limit"
    );
    describe_counter!(
        "llmop_counter_errors_total",
        "Failures of the counter store (Redis); the [counters] on_error policy decided"
    );
    describe_counter!(
        "llmop_alert_webhook_failures_total",
        "Budget alerts the webhook did not accept after 3 attempts"
    );
    describe_counter!(
        "llmop_shadow_skipped_total",
        "Shadow calls skipped because [features] shadow_concurrency were already in flight"
    );
    describe_counter!(
        "llmop_deployment_load_errors_total",
        "Failed reads or compilations of feature deployments (the previous ones keep serving)"
    );
    describe_counter!(
        "llmop_records_queued_total",
        "Records handed to the record writer."
    );
    describe_counter!(
        "llmop_records_written_total",
        "Records committed to the store."
    );
    describe_counter!(
        "llmop_records_delayed_total",
        "Records that waited for room in a full writer queue (back-pressure)."
    );
    describe_counter!(
        "llmop_records_held_total",
        "Answers held until their record was committed because the record writer was more than [store] max_lag_ms behind."
    );
    describe_counter!(
        "llmop_records_failed_commits_total",
        "Failed commits of a batch of records (each is retried)."
    );
    describe_counter!(
        "llmop_records_spilled_total",
        "Records written to the spill file at shutdown instead of the store."
    );
    describe_counter!(
        "llmop_records_replayed_total",
        "Records committed from a spill file at start."
    );
    describe_counter!(
        "llmop_records_lost_total",
        "Records neither committed nor spilled (always logged as errors)."
    );
    describe_gauge!(
        "llmop_circuit_state",
        "Circuit breaker state per route target: 0 closed, 1 half-open, 2 open."
    );
    describe_counter!(
        "llmop_circuit_opened_total",
        "Times a route target's circuit breaker opened."
    );
    describe_gauge!(
        "llmop_records_queue_depth",
        "Records queued and not yet committed."
    );
}
