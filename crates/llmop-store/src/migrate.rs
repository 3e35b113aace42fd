//! Versioned schema migrations, applied in order at open, each once, each in its own
//! transaction. Several replicas starting together on PostgreSQL serialize on an
//! advisory lock; SQLite serializes on its write lock.

use crate::store::{Backend, StoreError};
use sqlx::AnyConnection;
use sqlx::{Connection, Row};

struct Migration {
    version: i64,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sqlite: include_str!("../migrations/sqlite/0001_records.sql"),
        postgres: include_str!("../migrations/postgres/0001_records.sql"),
    },
    Migration {
        version: 2,
        sqlite: include_str!("../migrations/sqlite/0002_degraded.sql"),
        postgres: include_str!("../migrations/postgres/0002_degraded.sql"),
    },
    Migration {
        version: 3,
        sqlite: include_str!("../migrations/sqlite/0003_feature_versions.sql"),
        postgres: include_str!("../migrations/postgres/0003_feature_versions.sql"),
    },
    Migration {
        version: 4,
        sqlite: include_str!("../migrations/sqlite/0004_deployments.sql"),
        postgres: include_str!("../migrations/postgres/0004_deployments.sql"),
    },
    Migration {
        version: 5,
        sqlite: include_str!("../migrations/sqlite/0005_api_keys.sql"),
        postgres: include_str!("../migrations/postgres/0005_api_keys.sql"),
    },
    Migration {
        version: 6,
        sqlite: include_str!("../migrations/sqlite/0006_budgets.sql"),
        postgres: include_str!("../migrations/postgres/0006_budgets.sql"),
    },
    Migration {
        version: 7,
        sqlite: include_str!("../migrations/sqlite/0007_record_identity.sql"),
        postgres: include_str!("../migrations/postgres/0007_record_identity.sql"),
    },
    Migration {
        version: 8,
        sqlite: include_str!("../migrations/sqlite/0008_fidelity.sql"),
        postgres: include_str!("../migrations/postgres/0008_fidelity.sql"),
    },
    Migration {
        version: 9,
        sqlite: include_str!("../migrations/sqlite/0009_stages.sql"),
        postgres: include_str!("../migrations/postgres/0009_stages.sql"),
    },
    Migration {
        version: 10,
        sqlite: include_str!("../migrations/sqlite/0010_evals.sql"),
        postgres: include_str!("../migrations/postgres/0010_evals.sql"),
    },
    Migration {
        version: 11,
        sqlite: include_str!("../migrations/sqlite/0011_scores.sql"),
        postgres: include_str!("../migrations/postgres/0011_scores.sql"),
    },
    Migration {
        version: 12,
        sqlite: include_str!("../migrations/sqlite/0012_drift.sql"),
        postgres: include_str!("../migrations/postgres/0012_drift.sql"),
    },
    Migration {
        version: 13,
        sqlite: include_str!("../migrations/sqlite/0013_model_fingerprints.sql"),
        postgres: include_str!("../migrations/postgres/0013_model_fingerprints.sql"),
    },
    Migration {
        version: 14,
        sqlite: include_str!("../migrations/sqlite/0014_inline_scores.sql"),
        postgres: include_str!("../migrations/postgres/0014_inline_scores.sql"),
    },
    Migration {
        version: 15,
        sqlite: include_str!("../migrations/sqlite/0015_guardrails.sql"),
        postgres: include_str!("../migrations/postgres/0015_guardrails.sql"),
    },
    Migration {
        version: 16,
        sqlite: include_str!("../migrations/sqlite/0016_agents.sql"),
        postgres: include_str!("../migrations/postgres/0016_agents.sql"),
    },
    Migration {
        version: 17,
        sqlite: include_str!("../migrations/sqlite/0017_console.sql"),
        postgres: include_str!("../migrations/postgres/0017_console.sql"),
    },
    Migration {
        version: 18,
        sqlite: include_str!("../migrations/sqlite/0018_rollups.sql"),
        postgres: include_str!("../migrations/postgres/0018_rollups.sql"),
    },
    Migration {
        version: 19,
        sqlite: include_str!("../migrations/sqlite/0019_caching.sql"),
        postgres: include_str!("../migrations/postgres/0019_caching.sql"),
    },
    Migration {
        version: 20,
        sqlite: include_str!("../migrations/sqlite/0020_provider_id_scan.sql"),
        postgres: include_str!("../migrations/postgres/0020_provider_id_scan.sql"),
    },
];

/// Key of the PostgreSQL advisory lock held while migrating ("llmop" in ASCII).
const LOCK_KEY: i64 = 0x6c6c6d6f70;

pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

pub async fn run(conn: &mut AnyConnection, backend: Backend) -> Result<(), StoreError> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *conn)
            .await?;
    }
    let result = apply(conn, backend).await;
    if backend == Backend::Postgres {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *conn)
            .await;
    }
    result
}

async fn apply(conn: &mut AnyConnection, backend: Backend) -> Result<(), StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS llmop_schema (version BIGINT PRIMARY KEY, applied_at_ms BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM llmop_schema")
        .fetch_one(&mut *conn)
        .await?
        .try_get("v")?;
    if current > latest() {
        return Err(StoreError::Migration {
            version: current,
            message: format!(
                "the store's schema (version {current}) is newer than this llmop knows ({}); upgrade llmop",
                latest()
            ),
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let sql = match backend {
            Backend::Sqlite => m.sqlite,
            Backend::Postgres => m.postgres,
        };
        let mut tx = conn.begin().await?;
        for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            sqlx::query(stmt)
                .execute(&mut *tx)
                .await
                .map_err(|e| StoreError::Migration {
                    version: m.version,
                    message: e.to_string(),
                })?;
        }
        sqlx::query("INSERT INTO llmop_schema (version, applied_at_ms) VALUES ($1, $2)")
            .bind(m.version)
            .bind(crate::store::now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}
