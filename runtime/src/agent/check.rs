//! `pganalytics check`: tries what `run` will need, the way pganalyze's `--test` does, and says
//! what works. One [`Check`] per line: each PostgreSQL server of `[postgres]` and
//! `[postgres.servers.NAME]` (version, role, superuser, pg_stat_statements) and the backend
//! (TLS handshake, token, one authenticated request).
//!
//! It must never push a batch or change anything on either side beyond what `run` itself does
//! first (with a registration secret and no saved identity it registers, as `run` would).

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;

use crate::config::Config;
use crate::host::bindings::pganalytics::collector::postgres::Value;
use crate::host::postgres::client::{Client, Connection};
use crate::host::postgres::pool::PgPool;
use crate::pipeline::sender::Sender;
use crate::pipeline::transport;
use crate::telemetry::Metrics;

/// Threat: a check that hangs on a black-holed address instead of saying so.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// What the role and server look like, in one round trip.
const SERVER_SQL: &str = "SELECT current_setting('server_version')::text, current_user::text, \
     (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)::text, \
     (EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'))::text, \
     pg_has_role(current_user, 'pg_monitor', 'USAGE')::text";

/// The outcome of one check.
#[derive(Debug, Clone)]
pub struct Check {
    pub ok: bool,
    /// What was checked, e.g. postgres server `default` 127.0.0.1:5432 database `postgres` as
    /// `pganalytics`.
    pub what: String,
    /// What was found, or why it failed.
    pub detail: String,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = if self.ok { "ok  " } else { "FAIL" };
        write!(f, "{mark} {}: {}", self.what, self.detail)
    }
}

fn ok(what: &str, detail: impl Into<String>) -> Check {
    Check {
        ok: true,
        what: what.to_owned(),
        detail: detail.into(),
    }
}

fn fail(what: &str, detail: impl Into<String>) -> Check {
    Check {
        ok: false,
        what: what.to_owned(),
        detail: detail.into(),
    }
}

async fn bounded<T>(step: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(STEP_TIMEOUT, step).await.ok()
}

/// Runs every check that applies to `config` (it has been validated already).
pub async fn run_checks(config: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    for settings in config.postgres.values() {
        checks.push(check_postgres(PgPool::new(settings.clone())).await);
    }
    if config.backend.is_some() {
        checks.extend(check_backend(config).await);
    }
    checks
}

async fn check_postgres(pool: PgPool) -> Check {
    let settings = pool.settings();
    let what = format!(
        "postgres server `{}` {}:{} database `{}` as `{}`",
        settings.name, settings.host, settings.port, settings.maintenance_db, settings.user
    );
    let database = settings.maintenance_db.clone();
    let mut connection = match bounded(pool.checkout("pganalytics check", &database)).await {
        Some(Ok(connection)) => connection,
        Some(Err(e)) => return fail(&what, format!("cannot connect: {e}")),
        None => return fail(&what, format!("no answer within {STEP_TIMEOUT:?}")),
    };
    let row = bounded(async {
        let mut rows = connection.query(SERVER_SQL, &[]).await?;
        match rows.next().await {
            Some(row) => row.map(Some),
            None => Ok(None),
        }
    })
    .await;
    let values = match row {
        Some(Ok(Some(row))) => row.values,
        Some(Ok(None)) => return fail(&what, "the server answered no row"),
        Some(Err(e)) => return fail(&what, format!("query failed: {e}")),
        None => return fail(&what, format!("no answer within {STEP_TIMEOUT:?}")),
    };
    let text = |i: usize| match values.get(i) {
        Some(Value::Text(t)) => t.clone(),
        _ => "?".to_owned(),
    };
    let superuser = text(2) == "true";
    let mut detail = format!(
        "PostgreSQL {}, role `{}`{}{}, pg_stat_statements {}",
        text(0),
        text(1),
        if superuser {
            " (SUPERUSER: use a pg_monitor role instead)"
        } else {
            ""
        },
        if text(4) == "true" || superuser {
            ", member of pg_monitor"
        } else {
            ", NOT a member of pg_monitor (other sessions' statistics stay hidden)"
        },
        if text(3) == "true" {
            "installed"
        } else {
            "not installed (no pg_query_stats)"
        }
    );
    if superuser {
        detail.push_str("; works, but grants more than needed");
    }
    ok(&what, detail)
}

async fn check_backend(config: &Config) -> Vec<Check> {
    let Some(backend) = &config.backend else {
        return Vec::new();
    };
    let mut checks = Vec::new();
    let what = format!("backend {}", backend.url);
    let mut sender = match Sender::new(config, std::sync::Arc::new(Metrics::default())) {
        Ok(sender) => sender,
        Err(e) => {
            checks.push(fail(&what, format!("cannot build the HTTPS client: {e}")));
            return checks;
        }
    };
    // The handshake on its own, with an unauthenticated request whose answer does not matter.
    let reached = bounded(
        sender
            .client()
            .get(format!("{}/api/v1/health", backend.url))
            .send(),
    )
    .await;
    match reached {
        Some(Ok(response)) => {
            let tls = if backend.url.to_ascii_lowercase().starts_with("https://") {
                "TLS handshake ok"
            } else {
                "PLAIN HTTP (allow_insecure_http)"
            };
            checks.push(ok(
                &format!("{what} connection"),
                format!("{tls}, answered {}", response.status()),
            ));
        }
        Some(Err(e)) => {
            checks.push(fail(&format!("{what} connection"), transport::explain(&e)));
            return checks;
        }
        None => {
            checks.push(fail(
                &format!("{what} connection"),
                format!("no answer within {STEP_TIMEOUT:?}"),
            ));
            return checks;
        }
    }
    let (collector_id, token) = match bounded(sender.bearer()).await {
        Some(Ok(bearer)) => bearer,
        Some(Err(e)) => {
            checks.push(fail(&format!("{what} identity"), e.to_string()));
            return checks;
        }
        None => {
            checks.push(fail(
                &format!("{what} identity"),
                format!("no answer within {STEP_TIMEOUT:?}"),
            ));
            return checks;
        }
    };
    checks.push(ok(
        &format!("{what} identity"),
        format!("collector `{collector_id}` has a token"),
    ));
    // The config pull is the contract's one authenticated request without side effects.
    let answer = bounded(
        sender
            .client()
            .get(format!("{}/api/v1/config/{collector_id}", backend.url))
            .bearer_auth(token)
            .send(),
    )
    .await;
    let what = format!("{what} token accepted");
    checks.push(match answer {
        Some(Ok(response)) => match response.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => ok(
                &what,
                format!("GET /api/v1/config/{collector_id} answered {s}"),
            ),
            s => fail(
                &what,
                format!("GET /api/v1/config/{collector_id} answered {s}"),
            ),
        },
        Some(Err(e)) => fail(&what, transport::explain(&e)),
        None => fail(&what, format!("no answer within {STEP_TIMEOUT:?}")),
    });
    checks
}
