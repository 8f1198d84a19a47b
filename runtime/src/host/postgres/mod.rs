//! `postgres` capability: read-only SQL on host-owned connections.
//!
//! Shape: [`PostgresGrantConfig`] → [`PostgresGrant`] → [`PostgresCtx`] → `postgres::Host`,
//! registered as [`Postgres`]; the runtime's own connection settings (`[postgres]`) are in
//! [`settings`], and connections come through the small [`client::Client`] trait (the real
//! tokio-postgres [`pool`] by default, a fake in unit tests).
//!
//! Every query is checked by the [`guard`] before the server sees it, then runs as one statement
//! (extended protocol, so the server refuses a second one too) inside `START TRANSACTION READ
//! ONLY` with `statement_timeout` and `lock_timeout` no longer than what is left of the plugin's
//! deadline, with rows and bytes capped while they stream in. A database outside the grant is
//! never connected to.

pub mod allowed;
pub mod client;
pub mod guard;
pub mod pool;
pub mod settings;
pub mod tls;
pub mod values;
pub mod verdicts;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Deserialize;
use wasmtime::component::{HasSelf, Linker};

use self::client::{Client, ConnectError, Connection, QueryError};
use self::pool::PgPool;
pub use self::settings::{
    DEFAULT_SERVER, PostgresConfig, PostgresServers, PostgresSettingsError, RawPostgres,
    ServerProblem, SslMode, valid_server_name,
};
use super::audit::Audit;
use super::bindings::{
    Error,
    pganalytics::collector::postgres::{self, Rows, Value},
};
use super::capability::{GrantProblem, HostCapability};
use super::run::RunInfo;
use crate::units::HumanDuration;

/// Threat: a query returning millions of rows exhausting host and guest memory (DESIGN.md).
pub const DEFAULT_MAX_ROWS: u64 = 100_000;

/// Threat: a slow statement holding a connection and locks; also capped by the plugin deadline.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Threat: a monitoring query queueing behind an exclusive lock and blocking others behind it.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(1);

/// Lists the databases a plugin may be offered (on the maintenance database, outside any
/// transaction).
const LIST_DATABASES: &str = "SELECT datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname";

/// The `postgres` interface.
pub struct Postgres;

impl HostCapability for Postgres {
    const NAME: &'static str = "postgres";
    const SUMMARY: &'static str = "read-only SQL on PostgreSQL databases";
    const GRANT_EXAMPLE: Option<&'static str> = Some("databases = [\"postgres\"]");

    /// `[postgres]` and `[postgres.servers.NAME]`, by server name.
    type Setup = PostgresServers;
    type GrantConfig = PostgresGrantConfig;
    type Grant = PostgresGrant;
    type GrantError = PostgresGrantError;
    /// One pool per server, by server name.
    type Shared = Arc<BTreeMap<String, Arc<PgPool>>>;
    type Ctx = PostgresCtx;
    type Pending = ();

    fn grant(config: &PostgresGrantConfig) -> Result<PostgresGrant, PostgresGrantError> {
        PostgresGrant::new(config)
    }

    fn shared(setup: &PostgresServers, _: Option<&Path>) -> Self::Shared {
        Arc::new(
            setup
                .iter()
                .map(|(name, settings)| (name.clone(), Arc::new(PgPool::new(settings.clone()))))
                .collect(),
        )
    }

    fn context(
        grant: Option<Arc<PostgresGrant>>,
        pools: &Self::Shared,
        run: &RunInfo,
    ) -> PostgresCtx {
        // The pool of the server the grant names, and no other.
        let pool = grant
            .as_deref()
            .and_then(|grant| pools.get(grant.server()))
            .cloned();
        PostgresCtx::new(
            grant,
            pool,
            run.max_host_call_bytes,
            run.deadline,
            run.audit.clone(),
        )
    }

    fn add_to_linker<T: Send + 'static>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> &mut PostgresCtx,
    ) -> wasmtime::Result<()> {
        postgres::add_to_linker::<T, HasSelf<PostgresCtx>>(linker, get)
    }
}

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
    /// Functions beyond the built-in read-only allow-list, as queries name them (`schema.fn`, or
    /// `fn` for an unqualified call). List only functions that change nothing.
    pub functions: Option<Vec<String>>,
    /// Cluster-wide views and functions (other databases' sessions, statements, locks,
    /// replication) and settings that may hold secrets (default false).
    pub cluster: Option<bool>,
    /// The server queried: `default` (`[postgres]`, the default) or a key of
    /// `[postgres.servers]`. Whether it exists is checked with the whole config.
    pub server: Option<String>,
}

/// The validated grant: which databases, how many rows, how long a statement may run.
#[derive(Debug, Clone)]
pub struct PostgresGrant {
    all: bool,
    databases: BTreeSet<String>,
    max_rows: u64,
    statement_timeout: Duration,
    functions: BTreeSet<String>,
    cluster: bool,
    server: String,
    /// `server` was written in the grant (not defaulted).
    server_named: bool,
    /// The guard's verdicts under this grant's policy, by statement text.
    verdicts: verdicts::VerdictCache,
}

/// Why a `[plugins.NAME.grants.postgres]` table is invalid.
#[derive(Debug, thiserror::Error)]
pub enum PostgresGrantError {
    #[error("list at least one database, or \"*\" for all")]
    Empty,
    #[error("\"*\" already means every database; list nothing else with it")]
    StarWithOthers,
    #[error("`{0}` is not a function name (`name` or `schema.name`)")]
    FunctionName(String),
    #[error("`{0}` is not a server name (1 to 32 of `a-z`, `0-9`, `_` and `-`)")]
    ServerName(String),
}

impl GrantProblem for PostgresGrantError {
    fn key(&self) -> &'static str {
        match self {
            PostgresGrantError::Empty | PostgresGrantError::StarWithOthers => "databases",
            PostgresGrantError::FunctionName(_) => "functions",
            PostgresGrantError::ServerName(_) => "server",
        }
    }
}

/// A `functions` entry: one or two identifiers as PostgreSQL folds unquoted names.
fn is_function_name(entry: &str) -> bool {
    let parts: Vec<&str> = entry.split('.').collect();
    parts.len() <= 2
        && parts.iter().all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
        })
}

impl PostgresGrant {
    pub fn new(config: &PostgresGrantConfig) -> Result<Self, PostgresGrantError> {
        if config.databases.is_empty() {
            return Err(PostgresGrantError::Empty);
        }
        let all = config.databases.iter().any(|d| d == "*");
        if all && config.databases.len() > 1 {
            return Err(PostgresGrantError::StarWithOthers);
        }
        let functions = config.functions.clone().unwrap_or_default();
        if let Some(bad) = functions.iter().find(|f| !is_function_name(f)) {
            return Err(PostgresGrantError::FunctionName(bad.clone()));
        }
        let server = config.server.as_deref().unwrap_or(DEFAULT_SERVER);
        if !valid_server_name(server) {
            return Err(PostgresGrantError::ServerName(server.to_owned()));
        }
        Ok(Self {
            all,
            server: server.to_owned(),
            server_named: config.server.is_some(),
            databases: config.databases.iter().cloned().collect(),
            functions: functions.into_iter().collect(),
            cluster: config.cluster.unwrap_or(false),
            max_rows: config.max_rows.unwrap_or(DEFAULT_MAX_ROWS),
            statement_timeout: config
                .statement_timeout
                .map_or(DEFAULT_STATEMENT_TIMEOUT, |t| t.0),
            verdicts: verdicts::VerdictCache::default(),
        })
    }

    /// The [`guard`]'s verdict on `sql` under this grant's `cluster` and `functions`,
    /// remembered per statement text for this grant only ([`verdicts`]).
    pub fn check_sql(&self, sql: &str) -> Result<(), guard::Refusal> {
        let policy = guard::Policy {
            cluster: self.cluster,
            functions: &self.functions,
        };
        self.verdicts
            .get_or_check(sql, || guard::check(sql, policy))
    }

    pub fn allows(&self, database: &str) -> bool {
        self.all || self.databases.contains(database)
    }

    /// The server this grant queries.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Whether the grant's server is one of `servers` (the names the config defines), or may be
    /// left to fail at run time: a grant that does not name a server, in a config with no
    /// `[postgres]` at all, is allowed (its calls answer that nothing is configured), as before
    /// servers could be named.
    pub fn server_is_configured<'a>(&self, mut servers: impl Iterator<Item = &'a str>) -> bool {
        let mut none = true;
        let found = servers.any(|name| {
            none = false;
            name == self.server
        });
        found || (none && !self.server_named)
    }
}

/// Per-run state of the `postgres` capability, over connections from `C`.
pub struct PostgresCtx<C: Client = PgPool> {
    grant: Option<Arc<PostgresGrant>>,
    client: Option<Arc<C>>,
    max_bytes: usize,
    deadline: Instant,
    audit: Audit,
    /// Nanoseconds this run spent inside postgres calls past the guard (connection checkout,
    /// round trips and decoding the rows as they stream in), so the cost of the sandbox and the
    /// plugin can be told apart from the server's.
    server_nanos: AtomicU64,
}

impl<C: Client> PostgresCtx<C> {
    pub fn new(
        grant: Option<Arc<PostgresGrant>>,
        client: Option<Arc<C>>,
        max_bytes: usize,
        deadline: Instant,
        audit: Audit,
    ) -> Self {
        Self {
            grant,
            client,
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

    fn grant_and_client(&self, target: &str) -> Result<(&PostgresGrant, &C), Error> {
        let Some(grant) = self.grant.as_deref() else {
            return Err(self
                .audit
                .deny("postgres database", target, "no databases are granted"));
        };
        let Some(client) = self.client.as_deref() else {
            return Err(Error::Unavailable(format!(
                "the runtime has no connection settings for the PostgreSQL server `{}`",
                grant.server()
            )));
        };
        Ok((grant, client))
    }

    pub async fn list_databases(&self) -> Result<Vec<String>, Error> {
        let (grant, client) = self.grant_and_client("*")?;
        let maintenance = client.settings().maintenance_db.clone();
        let waiting = Instant::now();
        let owner = self.audit.plugin();
        let checkout = client
            .checkout(owner, &maintenance)
            .await
            .map_err(|e| connect_error(client.settings(), e));
        let listed = match checkout {
            Ok(mut connection) => {
                let names = database_names(&mut connection).await;
                if names.is_ok() {
                    client.checkin(owner, &maintenance, connection);
                }
                names
            }
            Err(e) => Err(e),
        };
        self.count_server_time(waiting);
        let settings = client.settings();
        Ok(listed?
            .into_iter()
            .filter(|name| grant.allows(name) && settings.permits(name))
            .collect())
    }

    pub async fn run_query(
        &self,
        database: &str,
        sql: &str,
        params: &[Value],
    ) -> Result<Rows, Error> {
        let (grant, client) = self.grant_and_client(database)?;
        if !grant.allows(database) {
            return Err(self.audit.deny(
                "postgres database",
                database,
                "it is not in the grant's `databases`",
            ));
        }
        if !client.settings().permits(database) {
            return Err(self.audit.deny(
                "postgres database",
                database,
                "it is not in `[postgres] databases`",
            ));
        }
        if let Err(refusal) = grant.check_sql(sql) {
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
        let owner = self.audit.plugin();
        let mut connection = match client.checkout(owner, database).await {
            Ok(mut connection) => {
                connection.limit_message_bytes(self.max_bytes);
                connection
            }
            Err(e) => {
                self.count_server_time(waiting);
                return Err(connect_error(client.settings(), e));
            }
        };
        let limits = QueryLimits {
            timeout,
            max_rows: grant.max_rows,
            max_bytes: self.max_bytes,
        };
        let (result, reusable) = run_read_only(&mut connection, sql, params, &limits).await;
        self.count_server_time(waiting);
        // A connection is reused only after a clean round trip; anything else may have left it
        // mid-transaction.
        if reusable {
            client.checkin(owner, database, connection);
        }
        result
    }
}

/// The datnames of the databases that accept connections, on the maintenance database.
async fn database_names<K: Connection>(connection: &mut K) -> Result<Vec<String>, Error> {
    let listing = |e: QueryError| Error::Unavailable(format!("listing databases: {}", e.detail()));
    let mut rows = connection
        .query(LIST_DATABASES, &[])
        .await
        .map_err(listing)?;
    let mut names = Vec::new();
    while let Some(row) = rows.next().await {
        if let Some(Value::Text(name)) = row.map_err(listing)?.values.into_iter().next() {
            names.push(name);
        }
    }
    Ok(names)
}

/// The bounds one query runs under.
struct QueryLimits {
    timeout: Duration,
    max_rows: u64,
    max_bytes: usize,
}

/// Opens the read-only transaction every plugin query runs in, with `SET LOCAL` of its timeouts
/// in milliseconds (never beyond `timeout`): one simple-protocol message, so one round trip. The
/// statements run in order and the first error stops the rest, so the timeouts are never set
/// outside the transaction.
fn begin_sql(timeout: Duration) -> String {
    format!(
        "START TRANSACTION READ ONLY; SET LOCAL statement_timeout = {}; \
         SET LOCAL lock_timeout = {}",
        timeout.as_millis().max(1),
        LOCK_TIMEOUT.as_millis().min(timeout.as_millis()).max(1)
    )
}

/// Runs one guarded statement in a read-only transaction and reads its rows under the caps.
/// Returns the result and whether the connection is clean enough to be reused.
async fn run_read_only<K: Connection>(
    connection: &mut K,
    sql: &str,
    params: &[Value],
    limits: &QueryLimits,
) -> (Result<Rows, Error>, bool) {
    if let Err(e) = connection.batch_execute(&begin_sql(limits.timeout)).await {
        let error = format!(
            "starting a read-only transaction with timeouts: {}",
            e.detail()
        );
        return (Err(Error::Unavailable(error)), false);
    }
    let result = read_rows(connection, sql, params, limits).await;
    // Read-only: nothing to commit, and a rollback cannot fail half-way. After an error of the
    // statement itself (refused, cancelled), the connection is still good once rolled back; after
    // a cap was hit, rows may still be in flight, so it is dropped instead.
    match result {
        Ok(rows) => match connection.batch_execute("ROLLBACK").await {
            Ok(()) => (Ok(rows), true),
            Err(e) => {
                let error = format!("ending the transaction: {}", e.detail());
                (Err(Error::Unavailable(error)), false)
            }
        },
        Err(error @ (Error::Invalid(_) | Error::Timeout(_))) => {
            let clean = connection.batch_execute("ROLLBACK").await.is_ok();
            (Err(error), clean)
        }
        Err(error) => (Err(error), false),
    }
}

/// Streams the rows of one statement, stopping as soon as a cap is passed.
async fn read_rows<K: Connection>(
    connection: &mut K,
    sql: &str,
    params: &[Value],
    limits: &QueryLimits,
) -> Result<Rows, Error> {
    let mut stream = connection.query(sql, params).await.map_err(query_error)?;
    let mut columns: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = stream.next().await {
        let row = row.map_err(query_error)?;
        if columns.is_none() {
            columns = row.columns;
        }
        if rows.len() as u64 >= limits.max_rows {
            return Err(Error::TooLarge(format!(
                "the query returned more than {} rows",
                limits.max_rows
            )));
        }
        bytes += row.values.iter().map(values::value_size).sum::<usize>();
        if bytes > limits.max_bytes {
            return Err(Error::TooLarge(format!(
                "the query result is larger than the {}-byte per-call limit",
                limits.max_bytes
            )));
        }
        rows.push(row.values);
    }
    Ok(Rows {
        columns: columns.unwrap_or_default(),
        rows,
    })
}

/// A connection error for the guest; a server other than `default` is named (the messages name
/// keys as `postgres.KEY`).
fn connect_error(settings: &PostgresConfig, error: ConnectError) -> Error {
    let named = |message: String| {
        if settings.name == DEFAULT_SERVER && settings.section == "postgres" {
            message
        } else {
            format!(
                "PostgreSQL server `{}` ([{}]): {message}",
                settings.name, settings.section
            )
        }
    };
    match error {
        ConnectError::NoSuchDatabase(message) => Error::NotFound(named(message)),
        ConnectError::Unavailable(message) => Error::Unavailable(named(message)),
    }
}

fn query_error(error: QueryError) -> Error {
    match error {
        QueryError::Cancelled(_) | QueryError::LockTimeout(_) => Error::Timeout(error.to_string()),
        QueryError::ReadOnly(_) | QueryError::Server(_) | QueryError::Decode(_) => {
            Error::Invalid(error.to_string())
        }
        QueryError::Closed(_) => Error::Unavailable(error.to_string()),
        QueryError::TooLarge(_) => Error::TooLarge(error.to_string()),
        QueryError::Io(_) => Error::Io(error.to_string()),
    }
}

impl<C: Client> postgres::Host for PostgresCtx<C> {
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
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use futures_util::stream;

    use super::client::{Row, RowStream};
    use super::*;

    /// What reached the fake server, shared by the client and its connections.
    #[derive(Default)]
    struct Seen {
        /// `DATABASE: STATEMENT` for every statement, in order.
        statements: Mutex<Vec<String>>,
        checkouts: AtomicUsize,
        checkins: AtomicUsize,
        /// Rows the capability pulled from a query's stream.
        rows_pulled: AtomicUsize,
    }

    /// A client that answers every query with `rows` (or `error`) and records what it was asked.
    struct Fake {
        settings: PostgresConfig,
        rows: Vec<Vec<Value>>,
        error: Option<QueryError>,
        seen: Arc<Seen>,
    }

    struct FakeConnection {
        database: String,
        rows: Vec<Vec<Value>>,
        error: Option<QueryError>,
        seen: Arc<Seen>,
    }

    impl Fake {
        fn new(rows: Vec<Vec<Value>>) -> Self {
            Self {
                settings: PostgresConfig::unreachable_for_tests(),
                rows,
                error: None,
                seen: Arc::default(),
            }
        }

        fn statements(&self) -> Vec<String> {
            self.seen.statements.lock().unwrap().clone()
        }

        fn count(counter: &AtomicUsize) -> usize {
            counter.load(Ordering::SeqCst)
        }
    }

    impl Client for Fake {
        type Connection = FakeConnection;

        fn settings(&self) -> &PostgresConfig {
            &self.settings
        }

        async fn checkout(
            &self,
            _owner: &str,
            database: &str,
        ) -> Result<FakeConnection, ConnectError> {
            self.seen.checkouts.fetch_add(1, Ordering::SeqCst);
            Ok(FakeConnection {
                database: database.to_owned(),
                rows: self.rows.clone(),
                error: self.error.clone(),
                seen: self.seen.clone(),
            })
        }

        fn checkin(&self, _: &str, _: &str, _: FakeConnection) {
            self.seen.checkins.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl FakeConnection {
        fn record(&self, statement: String) {
            let line = format!("{}: {statement}", self.database);
            self.seen.statements.lock().unwrap().push(line);
        }
    }

    impl Connection for FakeConnection {
        async fn batch_execute(&mut self, sql: &str) -> Result<(), QueryError> {
            self.record(sql.to_owned());
            Ok(())
        }

        async fn query<'a>(
            &'a mut self,
            sql: &'a str,
            params: &'a [Value],
        ) -> Result<RowStream<'a>, QueryError> {
            self.record(format!("query {sql} {params:?}"));
            if let Some(error) = self.error.clone() {
                return Err(error);
            }
            let seen = self.seen.clone();
            let rows = std::mem::take(&mut self.rows).into_iter().enumerate();
            Ok(stream::iter(rows)
                .map(move |(index, values)| {
                    seen.rows_pulled.fetch_add(1, Ordering::SeqCst);
                    Ok(Row {
                        columns: (index == 0).then(|| vec!["n".to_owned()]),
                        values,
                    })
                })
                .boxed())
        }
    }

    fn grant(databases: &[&str], timeout: Option<&str>, max_rows: Option<u64>) -> PostgresGrant {
        PostgresGrant::new(&PostgresGrantConfig {
            databases: databases.iter().map(|d| d.to_string()).collect(),
            max_rows,
            statement_timeout: timeout.map(|t| HumanDuration::parse(t).unwrap()),
            functions: None,
            cluster: None,
            server: None,
        })
        .unwrap()
    }

    fn ctx(grant: PostgresGrant, fake: &Arc<Fake>, max_bytes: usize) -> PostgresCtx<Fake> {
        PostgresCtx::new(
            Some(Arc::new(grant)),
            Some(fake.clone()),
            max_bytes,
            Instant::now() + Duration::from_secs(60),
            Audit::new("t".into(), "d".into()),
        )
    }

    fn ints(values: &[i64]) -> Vec<Vec<Value>> {
        values.iter().map(|&n| vec![Value::Int(n)]).collect()
    }

    #[tokio::test]
    async fn a_granted_query_runs_in_a_read_only_transaction_with_its_timeouts() {
        let fake = Arc::new(Fake::new(ints(&[1, 2])));
        let rows = ctx(grant(&["app"], Some("2s"), None), &fake, 1 << 20)
            .run_query("app", "SELECT $1::text", &[Value::Text("x".into())])
            .await
            .unwrap();
        assert_eq!(rows.columns, ["n"]);
        assert_eq!(format!("{:?}", rows.rows), format!("{:?}", ints(&[1, 2])));
        assert_eq!(
            fake.statements(),
            [
                "app: START TRANSACTION READ ONLY; SET LOCAL statement_timeout = 2000; \
                 SET LOCAL lock_timeout = 1000",
                "app: query SELECT $1::text [Value::Text(\"x\")]",
                "app: ROLLBACK",
            ]
        );
        assert_eq!(Fake::count(&fake.seen.checkouts), 1);
        assert_eq!(
            Fake::count(&fake.seen.checkins),
            1,
            "a clean connection is reused"
        );

        // A statement timeout below the lock timeout bounds the lock timeout too.
        let fake = Arc::new(Fake::new(ints(&[1])));
        ctx(grant(&["*"], Some("200ms"), None), &fake, 1 << 20)
            .run_query("app", "SELECT 1", &[])
            .await
            .unwrap();
        assert_eq!(
            fake.statements()[0],
            "app: START TRANSACTION READ ONLY; SET LOCAL statement_timeout = 200; \
             SET LOCAL lock_timeout = 200"
        );
    }

    #[tokio::test]
    async fn ungranted_databases_are_denied_before_any_connection() {
        let fake = Arc::new(Fake::new(ints(&[1])));
        let err = ctx(grant(&["app"], None, None), &fake, 1 << 20)
            .run_query("postgres", "SELECT 1", &[])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Denied(m) if m.contains("`postgres`")),
            "{err:?}"
        );
        assert_eq!(Fake::count(&fake.seen.checkouts), 0);
    }

    #[tokio::test]
    async fn granted_database_with_forbidden_sql_is_refused_before_any_connection() {
        let fake = Arc::new(Fake::new(ints(&[1])));
        let err = ctx(grant(&["app"], None, None), &fake, 1 << 20)
            .run_query("app", "SELECT pg_sleep(60)", &[])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Invalid(m) if m.contains("pg_sleep")),
            "{err:?}"
        );
        assert_eq!(Fake::count(&fake.seen.checkouts), 0);
    }

    #[tokio::test]
    async fn denied_databases_and_refused_sql_never_reach_the_client() {
        let mut settings = PostgresConfig::unreachable_for_tests();
        settings.databases = vec!["app".into(), "other".into()];
        let cases: [(&[&str], &str, &str, &str); 6] = [
            (&["app"], "postgres", "SELECT 1", "`postgres`"),
            (&["*"], "secret", "SELECT 1", "`[postgres] databases`"),
            (&["app"], "app", "SELECT pg_sleep(60)", "pg_sleep"),
            (&["app"], "app", "INSERT INTO t VALUES (1)", "query refused"),
            (&["app"], "app", "SELECT 1; SELECT 2", "query refused"),
            (
                &["app"],
                "app",
                "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
                "query refused",
            ),
        ];
        for (databases, database, sql, expected) in cases {
            let fake = Arc::new(Fake {
                settings: settings.clone(),
                ..Fake::new(ints(&[1]))
            });
            let err = ctx(grant(databases, None, None), &fake, 1 << 20)
                .run_query(database, sql, &[])
                .await
                .unwrap_err();
            assert!(
                matches!(&err, Error::Denied(m) | Error::Invalid(m) if m.contains(expected)),
                "{database} {sql}: {err:?}"
            );
            assert_eq!(Fake::count(&fake.seen.checkouts), 0, "{sql}");
            assert!(fake.statements().is_empty(), "{sql}");
        }
    }

    #[tokio::test]
    async fn a_passed_deadline_is_a_timeout_before_any_connection() {
        let fake = Arc::new(Fake::new(ints(&[1])));
        let ctx = PostgresCtx::new(
            Some(Arc::new(grant(&["app"], None, None))),
            Some(fake.clone()),
            1 << 20,
            Instant::now(),
            Audit::new("t".into(), "d".into()),
        );
        let err = ctx.run_query("app", "SELECT 1", &[]).await.unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err:?}");
        assert_eq!(Fake::count(&fake.seen.checkouts), 0);
    }

    #[tokio::test]
    async fn rows_and_bytes_are_capped_while_they_stream() {
        let fake = Arc::new(Fake::new(ints(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10])));
        let err = ctx(grant(&["app"], None, Some(3)), &fake, 1 << 20)
            .run_query("app", "SELECT n FROM t", &[])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::TooLarge(m) if m.contains("3 rows")),
            "{err:?}"
        );
        assert_eq!(
            Fake::count(&fake.seen.rows_pulled),
            4,
            "stopped at the first row over"
        );
        assert_eq!(
            Fake::count(&fake.seen.checkins),
            0,
            "a connection with rows in flight is dropped"
        );
        assert!(!fake.statements().iter().any(|s| s.ends_with("ROLLBACK")));

        let text = |n: usize| vec![Value::Text("x".repeat(n))];
        let fake = Arc::new(Fake::new(vec![text(40), text(40), text(40), text(40)]));
        let err = ctx(grant(&["app"], None, None), &fake, 100)
            .run_query("app", "SELECT t FROM t", &[])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::TooLarge(m) if m.contains("100-byte")),
            "{err:?}"
        );
        assert_eq!(Fake::count(&fake.seen.rows_pulled), 3);
    }

    #[tokio::test]
    async fn server_errors_are_rolled_back_and_the_connection_reused() {
        let cases = [
            (
                QueryError::ReadOnly("cannot execute UPDATE".into()),
                "refused by the server",
            ),
            (
                QueryError::Cancelled("canceling statement".into()),
                "was cancelled",
            ),
            (
                QueryError::Server("relation \"t\" does not exist".into()),
                "does not exist",
            ),
        ];
        for (error, expected) in cases {
            let fake = Arc::new(Fake {
                error: Some(error.clone()),
                ..Fake::new(Vec::new())
            });
            let err = ctx(grant(&["app"], None, None), &fake, 1 << 20)
                .run_query("app", "SELECT * FROM t", &[])
                .await
                .unwrap_err();
            let message = match (&error, &err) {
                (QueryError::Cancelled(_), Error::Timeout(m)) => m,
                (QueryError::ReadOnly(_) | QueryError::Server(_), Error::Invalid(m)) => m,
                _ => panic!("{error:?} became {err:?}"),
            };
            assert!(message.contains(expected), "{message}");
            assert_eq!(fake.statements().last().unwrap(), "app: ROLLBACK");
            assert_eq!(Fake::count(&fake.seen.checkins), 1);
        }
        let closed = Arc::new(Fake {
            error: Some(QueryError::Closed("connection reset".into())),
            ..Fake::new(Vec::new())
        });
        let err = ctx(grant(&["app"], None, None), &closed, 1 << 20)
            .run_query("app", "SELECT 1", &[])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
        assert_eq!(Fake::count(&closed.seen.checkins), 0);
    }

    #[tokio::test]
    async fn databases_are_listed_on_the_maintenance_database_and_narrowed() {
        let names = ["app", "other", "secret"]
            .iter()
            .map(|n| vec![Value::Text(n.to_string())])
            .collect();
        let mut settings = PostgresConfig::unreachable_for_tests();
        settings.databases = vec!["app".into(), "other".into()];
        let fake = Arc::new(Fake {
            settings,
            ..Fake::new(names)
        });
        let listed = ctx(grant(&["app", "secret"], None, None), &fake, 1 << 20)
            .list_databases()
            .await
            .unwrap();
        assert_eq!(listed, ["app"]);
        let statements = fake.statements();
        assert_eq!(statements.len(), 1, "no transaction around the listing");
        assert!(statements[0].starts_with("postgres: query SELECT datname"));
        assert_eq!(Fake::count(&fake.seen.checkins), 1);
    }

    #[tokio::test]
    async fn no_grant_denies_listing() {
        let none: PostgresCtx<Fake> = PostgresCtx::new(
            None,
            None,
            1,
            Instant::now(),
            Audit::new("t".into(), "d".into()),
        );
        assert!(matches!(none.list_databases().await, Err(Error::Denied(_))));
    }

    /// The `refused SQL` warnings logged while `body` runs on this thread.
    ///
    /// tracing caches each callsite's interest for the whole process, computed when the callsite
    /// is first hit. While at most one dispatcher is registered it asks only the hitting thread's
    /// subscriber, so a sibling test on a thread without one that hits `refused SQL` first caches
    /// "never" and this capture sees nothing (CI saw it once). Two anchors, registered once and
    /// kept for the life of the test binary, keep that shortcut off: from then on interest is
    /// computed over every live dispatcher under tracing's lock, which orders it against the
    /// capture's own registration, and the rebuild below refreshes what was cached before.
    async fn refusals_logged<F: std::future::Future<Output = ()>>(body: F) -> Vec<String> {
        static ANCHORS: std::sync::OnceLock<[tracing::Dispatch; 2]> = std::sync::OnceLock::new();
        ANCHORS.get_or_init(|| {
            let inert = || tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
            [inert(), inert()]
        });
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        tracing::callsite::rebuild_interest_cache();
        body.await;
        drop(guard);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter(|l| l.contains("refused SQL"))
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn remembered_verdicts_allow_and_refuse_as_the_guard_did_and_refusals_are_still_logged() {
        let grant = Arc::new(grant(&["app"], None, None));
        let logged = refusals_logged(async {
            for round in 0..3 {
                let fake = Arc::new(Fake::new(ints(&[1])));
                let ctx = PostgresCtx::new(
                    Some(grant.clone()),
                    Some(fake.clone()),
                    1 << 20,
                    Instant::now() + Duration::from_secs(60),
                    Audit::new("t".into(), "d".into()),
                );
                let rows = ctx.run_query("app", "SELECT n FROM t", &[]).await;
                assert!(rows.is_ok(), "round {round}: {rows:?}");
                let err = ctx
                    .run_query("app", "SELECT pg_sleep(60)", &[])
                    .await
                    .unwrap_err();
                assert!(
                    matches!(&err, Error::Invalid(m) if m == "query refused: function `pg_sleep` is not on the read-only allow-list; grant it with functions = [\"pg_sleep\"] if it is read-only"),
                    "round {round}: {err:?}"
                );
                assert_eq!(Fake::count(&fake.seen.checkouts), 1, "round {round}");
                assert_eq!(
                    fake.statements().iter().filter(|s| s.contains("pg_sleep")).count(),
                    0
                );
            }
        })
        .await;
        assert_eq!(grant.verdicts.len(), 2, "both verdicts remembered");
        assert_eq!(logged.len(), 3, "every refusal is logged: {logged:?}");
        assert!(
            logged
                .iter()
                .all(|l| l.contains("pg_sleep") && l.contains("plugin=\"t\"")),
            "{logged:?}"
        );
    }

    /// A grant on database `app` with `cluster` and `functions` as given.
    fn grant_config(cluster: Option<bool>, functions: &[&str]) -> PostgresGrantConfig {
        PostgresGrantConfig {
            databases: vec!["app".into()],
            max_rows: None,
            statement_timeout: None,
            functions: Some(functions.iter().map(|f| f.to_string()).collect()),
            cluster,
            server: None,
        }
    }

    #[tokio::test]
    async fn a_grant_never_sees_another_grant_s_verdict() {
        let activity = "SELECT count(*) FROM pg_stat_activity";
        let granted_fn = "SELECT ext.reader()";
        let plain = PostgresGrant::new(&grant_config(None, &[])).unwrap();
        let cluster = PostgresGrant::new(&grant_config(Some(true), &[])).unwrap();
        let reader = PostgresGrant::new(&grant_config(None, &["ext.reader"])).unwrap();
        // Each order: the first grant's remembered verdict never decides for the second.
        for _ in 0..2 {
            assert!(cluster.check_sql(activity).is_ok());
            assert!(plain.check_sql(activity).is_err());
            assert!(reader.check_sql(granted_fn).is_ok());
            assert!(plain.check_sql(granted_fn).is_err());
            assert!(cluster.check_sql(granted_fn).is_err());
        }
        let plain_again = PostgresGrant::new(&grant_config(None, &[])).unwrap();
        assert!(plain_again.check_sql(granted_fn).is_err());
        let reader_again = PostgresGrant::new(&grant_config(None, &["ext.reader"])).unwrap();
        assert!(reader_again.check_sql(activity).is_err());
        assert_eq!(plain.verdicts.len(), 2);
        assert_eq!(cluster.verdicts.len(), 2);
        assert_eq!(reader.verdicts.len(), 1);
    }

    #[tokio::test]
    async fn the_grant_s_cluster_and_functions_reach_the_guard() {
        let run = |grant: PostgresGrant, sql: &'static str| async move {
            let fake = Arc::new(Fake::new(ints(&[1])));
            let result = ctx(grant, &fake, 1 << 20).run_query("app", sql, &[]).await;
            (result, Fake::count(&fake.seen.checkouts))
        };
        let activity = "SELECT count(*) FROM pg_stat_activity";
        let plain = PostgresGrant::new(&grant_config(None, &[])).unwrap();
        let (result, checkouts) = run(plain, activity).await;
        assert!(
            matches!(&result, Err(Error::Invalid(m)) if m.contains("cluster = true")),
            "{result:?}"
        );
        assert_eq!(checkouts, 0);
        let cluster = PostgresGrant::new(&grant_config(Some(true), &[])).unwrap();
        assert!(run(cluster.clone(), activity).await.0.is_ok());
        assert!(run(cluster, "SELECT * FROM pg_authid").await.0.is_err());
        let granted = PostgresGrant::new(&grant_config(None, &["ext.reader"])).unwrap();
        assert!(run(granted.clone(), "SELECT ext.reader()").await.0.is_ok());
        assert!(run(granted, "SELECT ext.writer()").await.0.is_err());
        for bad in ["", "a.b.c", "Upper", "fn()", "a b", ".fn", "1fn"] {
            let err = PostgresGrant::new(&grant_config(None, &[bad])).unwrap_err();
            assert_eq!(err.key(), "functions", "{bad}");
        }
    }

    #[test]
    fn star_must_stand_alone_and_lists_must_not_be_empty() {
        let config = |dbs: &[&str]| PostgresGrantConfig {
            databases: dbs.iter().map(|d| d.to_string()).collect(),
            max_rows: None,
            statement_timeout: None,
            functions: None,
            cluster: None,
            server: None,
        };
        assert!(PostgresGrant::new(&config(&[])).is_err());
        assert!(PostgresGrant::new(&config(&["*", "app"])).is_err());
        let all = PostgresGrant::new(&config(&["*"])).unwrap();
        assert!(all.allows("anything"));
        let some = PostgresGrant::new(&config(&["app"])).unwrap();
        assert!(some.allows("app") && !some.allows("postgres"));
    }

    #[test]
    fn the_grant_names_its_server_and_runs_use_that_server_s_pool() {
        let config = |server: Option<&str>| PostgresGrantConfig {
            databases: vec!["*".into()],
            max_rows: None,
            statement_timeout: None,
            functions: None,
            cluster: None,
            server: server.map(str::to_owned),
        };
        let default = PostgresGrant::new(&config(None)).unwrap();
        assert_eq!(default.server(), "default");
        let b = PostgresGrant::new(&config(Some("b"))).unwrap();
        assert_eq!(b.server(), "b");
        for bad in ["", "B", "a.b", "x y"] {
            let err = PostgresGrant::new(&config(Some(bad))).unwrap_err();
            assert_eq!(err.key(), "server", "{bad}");
        }
        // Existence is judged against the config's servers.
        assert!(b.server_is_configured(["default", "b"].into_iter()));
        assert!(!b.server_is_configured(["default"].into_iter()));
        assert!(!b.server_is_configured(std::iter::empty()));
        assert!(default.server_is_configured(std::iter::empty()));
        assert!(!default.server_is_configured(["b"].into_iter()));
        let named_default = PostgresGrant::new(&config(Some("default"))).unwrap();
        assert!(!named_default.server_is_configured(std::iter::empty()));

        let mut servers = PostgresServers::new();
        for (name, port) in [("default", 1), ("b", 2)] {
            let mut settings = PostgresConfig::unreachable_for_tests();
            settings.name = name.into();
            settings.port = port;
            servers.insert(name.into(), settings);
        }
        let pools = Postgres::shared(&servers, None);
        let run = RunInfo {
            plugin: "t".into(),
            audit: Audit::new("t".into(), "d".into()),
            log: super::super::budget::LogBudget::new("t".into(), 1024),
            deadline: Instant::now(),
            max_host_call_bytes: 1 << 20,
            max_state_bytes: 1 << 10,
            settings: Default::default(),
        };
        let ctx = Postgres::context(Some(Arc::new(b)), &pools, &run);
        assert_eq!(ctx.client.as_deref().unwrap().settings().port, 2);
        let ctx = Postgres::context(Some(Arc::new(default)), &pools, &run);
        assert_eq!(ctx.client.as_deref().unwrap().settings().port, 1);
        let c = PostgresGrant::new(&config(Some("c"))).unwrap();
        let ctx = Postgres::context(Some(Arc::new(c)), &pools, &run);
        assert!(ctx.client.is_none());
    }

    #[test]
    fn connection_errors_of_a_named_server_name_it() {
        let mut settings = PostgresConfig::unreachable_for_tests();
        let refused = || ConnectError::Unavailable("connection refused".into());
        assert!(
            matches!(connect_error(&settings, refused()), Error::Unavailable(m) if m == "connection refused")
        );
        settings.name = "b".into();
        settings.section = "postgres.servers.b".into();
        assert!(matches!(
            connect_error(&settings, refused()),
            Error::Unavailable(m) if m == "PostgreSQL server `b` ([postgres.servers.b]): connection refused"
        ));
        let missing = ConnectError::NoSuchDatabase("database \"x\" does not exist".into());
        assert!(
            matches!(connect_error(&settings, missing), Error::NotFound(m) if m.starts_with("PostgreSQL server `b`"))
        );
    }
}
