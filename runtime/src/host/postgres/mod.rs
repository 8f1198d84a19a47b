//! `postgres` capability: read-only SQL on host-owned connections.
//!
//! Shape: [`PostgresGrantConfig`] → [`PostgresGrant`] → [`PostgresCtx`] → `postgres::Host`.
//! Every query is checked by the [`guard`] before the server sees it, then runs as one statement
//! (extended protocol, so the server refuses a second one too) inside `BEGIN READ ONLY` with
//! `statement_timeout` and `lock_timeout` no longer than what is left of the plugin's deadline,
//! with rows and bytes capped while they stream in. A database outside the grant is never
//! connected to.

pub mod guard;
pub mod pool;
pub mod values;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, pin_mut};
use serde::Deserialize;

use self::pool::{ConnectError, PgPool, describe};
use super::audit::Audit;
use super::bindings::{
    Error,
    pganalytics::collector::postgres::{self, Rows, Value},
};
use crate::units::HumanDuration;

/// Threat: a query returning millions of rows exhausting host and guest memory (DESIGN.md).
pub const DEFAULT_MAX_ROWS: u64 = 100_000;

/// Threat: a slow statement holding a connection and locks; also capped by the plugin deadline.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Threat: a monitoring query queueing behind an exclusive lock and blocking others behind it.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(1);

/// `[plugins.NAME.grants.postgres]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresGrantConfig {
    /// Databases the plugin may query, or `["*"]` for every database that accepts connections
    /// (templates excluded).
    pub databases: Vec<String>,
    /// Rows per query (default 100000).
    pub max_rows: Option<u64>,
    /// Statement timeout per query (default 5s; never beyond the plugin's own deadline).
    pub statement_timeout: Option<HumanDuration>,
}

#[derive(Debug, Clone)]
pub struct PostgresGrant {
    all: bool,
    databases: BTreeSet<String>,
    max_rows: u64,
    statement_timeout: Duration,
}

impl PostgresGrant {
    pub fn new(config: &PostgresGrantConfig) -> Result<Self, String> {
        if config.databases.is_empty() {
            return Err("list at least one database, or \"*\" for all".into());
        }
        let all = config.databases.iter().any(|d| d == "*");
        if all && config.databases.len() > 1 {
            return Err("\"*\" already means every database; list nothing else with it".into());
        }
        Ok(Self {
            all,
            databases: config.databases.iter().cloned().collect(),
            max_rows: config.max_rows.unwrap_or(DEFAULT_MAX_ROWS),
            statement_timeout: config
                .statement_timeout
                .map_or(DEFAULT_STATEMENT_TIMEOUT, |t| t.0),
        })
    }

    pub fn allows(&self, database: &str) -> bool {
        self.all || self.databases.contains(database)
    }
}

/// Per-run state of the `postgres` capability.
pub struct PostgresCtx {
    grant: Option<Arc<PostgresGrant>>,
    pool: Option<Arc<PgPool>>,
    max_bytes: usize,
    deadline: Instant,
    audit: Audit,
    /// Nanoseconds this run spent inside postgres calls past the guard (connection checkout,
    /// round trips and decoding the rows as they stream in), so the cost of the sandbox and the
    /// plugin can be told apart from the server's.
    server_nanos: AtomicU64,
}

impl PostgresCtx {
    pub fn new(
        grant: Option<Arc<PostgresGrant>>,
        pool: Option<Arc<PgPool>>,
        max_bytes: usize,
        deadline: Instant,
        audit: Audit,
    ) -> Self {
        Self {
            grant,
            pool,
            max_bytes,
            deadline,
            audit,
            server_nanos: AtomicU64::new(0),
        }
    }

    /// Time this run spent talking to the server so far.
    pub fn server_time(&self) -> Duration {
        Duration::from_nanos(self.server_nanos.load(Ordering::Relaxed))
    }

    fn count_server_time(&self, since: Instant) {
        let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.server_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn grant_and_pool(&self, target: &str) -> Result<(&PostgresGrant, &PgPool), Error> {
        let Some(grant) = self.grant.as_deref() else {
            return Err(self
                .audit
                .deny("postgres database", target, "no databases are granted"));
        };
        let Some(pool) = self.pool.as_deref() else {
            return Err(Error::Unavailable(
                "the runtime has no [postgres] connection settings".into(),
            ));
        };
        Ok((grant, pool))
    }

    pub async fn list_databases(&self) -> Result<Vec<String>, Error> {
        let (grant, pool) = self.grant_and_pool("*")?;
        let maintenance = pool.settings().maintenance_db.clone();
        let waiting = Instant::now();
        let client = pool.checkout(&maintenance).await.map_err(connect_error)?;
        let rows = client
            .query(
                "SELECT datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname",
                &[],
            )
            .await
            .map_err(|e| Error::Unavailable(format!("listing databases: {}", describe(&e))));
        self.count_server_time(waiting);
        let rows = rows?;
        pool.checkin(&maintenance, client);
        let settings = pool.settings();
        Ok(rows
            .iter()
            .map(|row| row.get::<_, String>(0))
            .filter(|name| grant.allows(name) && settings.permits(name))
            .collect())
    }

    pub async fn run_query(
        &self,
        database: &str,
        sql: &str,
        params: &[Value],
    ) -> Result<Rows, Error> {
        let (grant, pool) = self.grant_and_pool(database)?;
        if !grant.allows(database) {
            return Err(self.audit.deny(
                "postgres database",
                database,
                "it is not in the grant's `databases`",
            ));
        }
        if !pool.settings().permits(database) {
            return Err(self.audit.deny(
                "postgres database",
                database,
                "it is not in `[postgres] databases`",
            ));
        }
        if let Err(refusal) = guard::check(sql) {
            tracing::warn!(
                plugin = self.audit.plugin(),
                database,
                "refused SQL: {refusal}"
            );
            return Err(Error::Invalid(format!("query refused: {refusal}")));
        }
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let timeout = grant.statement_timeout.min(remaining);
        if timeout < Duration::from_millis(1) {
            return Err(Error::Timeout("the plugin's deadline has passed".into()));
        }
        let waiting = Instant::now();
        let checkout = pool.checkout(database).await.map_err(connect_error);
        let mut client = match checkout {
            Ok(client) => client,
            Err(e) => {
                self.count_server_time(waiting);
                return Err(e);
            }
        };
        let result = run_read_only(
            &mut client,
            sql,
            params,
            timeout,
            grant.max_rows,
            self.max_bytes,
        )
        .await;
        self.count_server_time(waiting);
        // A connection is reused only after a clean round trip; anything else may have left it
        // mid-transaction.
        if result.is_ok() || matches!(result, Err(Error::Invalid(_)) | Err(Error::Timeout(_))) {
            pool.checkin(database, client);
        }
        result
    }
}

async fn run_read_only(
    client: &mut tokio_postgres::Client,
    sql: &str,
    params: &[Value],
    timeout: Duration,
    max_rows: u64,
    max_bytes: usize,
) -> Result<Rows, Error> {
    let transaction = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(|e| {
            Error::Unavailable(format!(
                "starting a read-only transaction: {}",
                describe(&e)
            ))
        })?;
    transaction
        .batch_execute(&format!(
            "SET LOCAL statement_timeout = {}; SET LOCAL lock_timeout = {}",
            timeout.as_millis().max(1),
            LOCK_TIMEOUT.as_millis().min(timeout.as_millis()).max(1)
        ))
        .await
        .map_err(|e| Error::Unavailable(format!("setting timeouts: {}", describe(&e))))?;
    let typed: Vec<(&(dyn postgres_types::ToSql + Sync), postgres_types::Type)> = params
        .iter()
        .map(|p| (values::param(p), values::param_type(p)))
        .collect();
    let stream = transaction
        .query_typed_raw(sql, typed)
        .await
        .map_err(query_error)?;
    pin_mut!(stream);
    let mut columns: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = stream.next().await {
        let row = row.map_err(query_error)?;
        if columns.is_none() {
            columns = Some(row.columns().iter().map(|c| c.name().to_owned()).collect());
        }
        if rows.len() as u64 >= max_rows {
            return Err(Error::TooLarge(format!(
                "the query returned more than {max_rows} rows"
            )));
        }
        let mut out = Vec::with_capacity(row.len());
        for index in 0..row.len() {
            let value = values::column_value(&row, index).map_err(Error::Invalid)?;
            bytes += values::value_size(&value);
            out.push(value);
        }
        if bytes > max_bytes {
            return Err(Error::TooLarge(format!(
                "the query result is larger than the {max_bytes}-byte per-call limit"
            )));
        }
        rows.push(out);
    }
    // Read-only: nothing to commit, and a rollback cannot fail half-way.
    transaction
        .rollback()
        .await
        .map_err(|e| Error::Unavailable(format!("ending the transaction: {}", describe(&e))))?;
    Ok(Rows {
        columns: columns.unwrap_or_default(),
        rows,
    })
}

fn connect_error(error: ConnectError) -> Error {
    match error {
        ConnectError::NoSuchDatabase(message) => Error::NotFound(message),
        ConnectError::Unavailable(message) => Error::Unavailable(message),
    }
}

fn query_error(error: tokio_postgres::Error) -> Error {
    use tokio_postgres::error::SqlState;
    match error.as_db_error().map(|db| db.code().clone()) {
        Some(SqlState::QUERY_CANCELED) => {
            Error::Timeout(format!("the statement was cancelled: {}", describe(&error)))
        }
        Some(SqlState::LOCK_NOT_AVAILABLE) => Error::Timeout(describe(&error)),
        Some(SqlState::READ_ONLY_SQL_TRANSACTION) => {
            Error::Invalid(format!("refused by the server: {}", describe(&error)))
        }
        Some(_) => Error::Invalid(describe(&error)),
        None if error.is_closed() => {
            Error::Unavailable(format!("the connection closed: {}", describe(&error)))
        }
        None => Error::Io(describe(&error)),
    }
}

impl postgres::Host for PostgresCtx {
    async fn databases(&mut self) -> Result<Vec<String>, Error> {
        self.list_databases().await
    }

    async fn query(
        &mut self,
        database: String,
        sql: String,
        params: Vec<Value>,
    ) -> Result<Rows, Error> {
        self.run_query(&database, &sql, &params).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(databases: &[&str]) -> PostgresCtx {
        let grant = PostgresGrant::new(&PostgresGrantConfig {
            databases: databases.iter().map(|d| d.to_string()).collect(),
            max_rows: None,
            statement_timeout: None,
        })
        .unwrap();
        PostgresCtx::new(
            Some(Arc::new(grant)),
            Some(Arc::new(PgPool::new(
                crate::config::PostgresConfig::unreachable_for_tests(),
            ))),
            1 << 20,
            Instant::now() + Duration::from_secs(5),
            Audit::new("t".into(), "d".into()),
        )
    }

    #[tokio::test]
    async fn ungranted_databases_are_denied_before_any_connection() {
        let err = ctx(&["app"])
            .run_query("postgres", "SELECT 1", &[])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Denied(m) if m.contains("`postgres`")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn granted_database_with_forbidden_sql_is_refused_before_any_connection() {
        let err = ctx(&["app"])
            .run_query("app", "SELECT pg_sleep(60)", &[])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Invalid(m) if m.contains("pg_sleep")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn no_grant_denies_listing() {
        let none = PostgresCtx::new(
            None,
            None,
            1,
            Instant::now(),
            Audit::new("t".into(), "d".into()),
        );
        assert!(matches!(none.list_databases().await, Err(Error::Denied(_))));
    }

    #[test]
    fn star_must_stand_alone_and_lists_must_not_be_empty() {
        let config = |dbs: &[&str]| PostgresGrantConfig {
            databases: dbs.iter().map(|d| d.to_string()).collect(),
            max_rows: None,
            statement_timeout: None,
        };
        assert!(PostgresGrant::new(&config(&[])).is_err());
        assert!(PostgresGrant::new(&config(&["*", "app"])).is_err());
        let all = PostgresGrant::new(&config(&["*"])).unwrap();
        assert!(all.allows("anything"));
        let some = PostgresGrant::new(&config(&["app"])).unwrap();
        assert!(some.allows("app") && !some.allows("postgres"));
    }
}
