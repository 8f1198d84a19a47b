//! Host-owned PostgreSQL connections, one small idle list per plugin and database, shared by
//! the runs of that plugin only (a connection never passes from one plugin to another, so no
//! session state crosses plugins): the real [`Client`] of the `postgres` capability. Plugins
//! never see a connection, only rows.
//!
//! Every new connection is checked for a superuser role: refused unless `[postgres]
//! allow_superuser = true`, and warned about once when allowed.
//!
//! A connection that died (server restart, network) is noticed when it is checked out or fails
//! and is replaced by a new one, so the next cycle after a restart simply reconnects. A connection
//! whose query was abandoned mid-flight (plugin deadline) is dropped, never reused.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::NoTls;

use super::client::{Client, ConnectError, Connection, QueryError, Row, RowStream};
use super::settings::PostgresConfig;
use super::values;
use crate::host::bindings::pganalytics::collector::postgres::Value;

/// Threat: a plugin looping over databases would otherwise open unbounded connections; idle
/// connections beyond this per plugin and database are closed.
const MAX_IDLE_PER_DATABASE: usize = 2;

/// Threat: an unreachable server stalling every run until the plugin deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The connection pool of one plugin host.
pub struct PgPool {
    settings: PostgresConfig,
    /// Idle connections by (plugin, database).
    idle: Mutex<HashMap<(String, String), Vec<tokio_postgres::Client>>>,
    superuser_checked: AtomicBool,
}

/// A connection checked out of a [`PgPool`].
pub struct PgConnection(tokio_postgres::Client);

impl Client for PgPool {
    type Connection = PgConnection;

    fn settings(&self) -> &PostgresConfig {
        &self.settings
    }

    async fn checkout(&self, owner: &str, database: &str) -> Result<PgConnection, ConnectError> {
        self.checkout_client(owner, database)
            .await
            .map(PgConnection)
    }

    fn checkin(&self, owner: &str, database: &str, connection: PgConnection) {
        self.checkin_client(owner, database, connection.0)
    }
}

impl Connection for PgConnection {
    async fn batch_execute(&mut self, sql: &str) -> Result<(), QueryError> {
        self.0.batch_execute(sql).await.map_err(|e| query_error(&e))
    }

    async fn query<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> Result<RowStream<'a>, QueryError> {
        let typed: Vec<(&(dyn postgres_types::ToSql + Sync), postgres_types::Type)> = params
            .iter()
            .map(|p| (values::param(p), values::param_type(p)))
            .collect();
        let rows = self
            .0
            .query_typed_raw(sql, typed)
            .await
            .map_err(|e| query_error(&e))?;
        let mut first = true;
        Ok(rows
            .map(move |row| {
                let row = row.map_err(|e| query_error(&e))?;
                let columns = std::mem::take(&mut first)
                    .then(|| row.columns().iter().map(|c| c.name().to_owned()).collect());
                let values = (0..row.len())
                    .map(|index| values::column_value(&row, index))
                    .collect::<Result<Vec<Value>, String>>()
                    .map_err(QueryError::Decode)?;
                Ok(Row { columns, values })
            })
            .boxed())
    }
}

impl PgPool {
    pub fn new(settings: PostgresConfig) -> Self {
        Self {
            settings,
            idle: Mutex::default(),
            superuser_checked: AtomicBool::new(false),
        }
    }

    /// An open connection of `owner` to `database`: an idle one if it is still alive, else a
    /// new one.
    async fn checkout_client(
        &self,
        owner: &str,
        database: &str,
    ) -> Result<tokio_postgres::Client, ConnectError> {
        let key = (owner.to_owned(), database.to_owned());
        loop {
            let candidate = self
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(&key)
                .and_then(Vec::pop);
            match candidate {
                Some(client) if !client.is_closed() => return Ok(client),
                Some(_dead) => continue,
                None => break,
            }
        }
        let client = self.connect(database).await?;
        self.refuse_superuser(&client).await?;
        Ok(client)
    }

    /// Returns a connection of `owner` after a completed query.
    fn checkin_client(&self, owner: &str, database: &str, client: tokio_postgres::Client) {
        if client.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle
            .entry((owner.to_owned(), database.to_owned()))
            .or_default();
        if list.len() < MAX_IDLE_PER_DATABASE {
            list.push(client);
        }
    }

    async fn connect(&self, database: &str) -> Result<tokio_postgres::Client, ConnectError> {
        let s = &self.settings;
        let mut config = tokio_postgres::Config::new();
        config
            .host(&s.host)
            .port(s.port)
            .user(&s.user)
            .dbname(database)
            .application_name("pganalytics")
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(password) = self.password()? {
            config.password(password);
        }
        // Only `disable` and `prefer` are accepted by config validation: the runtime has no TLS
        // connector for PostgreSQL yet, so `prefer` connects without TLS (unix sockets, localhost).
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        let connecting = config.connect(NoTls);
        let (client, connection) = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Err(_) => {
                return Err(ConnectError::Unavailable(format!(
                    "connecting to database `{database}` timed out after {}s",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
            Ok(Err(e)) => {
                if e.as_db_error().is_some_and(|db| {
                    db.code() == &tokio_postgres::error::SqlState::INVALID_CATALOG_NAME
                }) {
                    return Err(ConnectError::NoSuchDatabase(format!(
                        "database `{database}` does not exist"
                    )));
                }
                return Err(ConnectError::Unavailable(format!(
                    "cannot connect to database `{database}`: {}",
                    describe(&e)
                )));
            }
            Ok(Ok(pair)) => pair,
        };
        let name = database.to_owned();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(database = %name, "postgres connection closed: {e}");
            }
        });
        Ok(client)
    }

    fn password(&self) -> Result<Option<String>, ConnectError> {
        if let Some(password) = &self.settings.password {
            return Ok(Some(password.clone()));
        }
        let Some(file) = &self.settings.password_file else {
            return Ok(None);
        };
        read_password(file)
            .map(Some)
            .map_err(ConnectError::Unavailable)
    }

    /// Refuses a connection whose role is a superuser unless `allow_superuser` is set, and then
    /// warns once. Checked on every new connection: the role may be altered while the agent runs.
    async fn refuse_superuser(&self, client: &tokio_postgres::Client) -> Result<(), ConnectError> {
        let superuser = client
            .query_one("SELECT current_setting('is_superuser') = 'on'", &[])
            .await
            .map_err(|e| {
                ConnectError::Unavailable(format!(
                    "checking whether role `{}` is a superuser: {}",
                    self.settings.user,
                    describe(&e)
                ))
            })?
            .get::<_, bool>(0);
        if !superuser {
            return Ok(());
        }
        if !self.settings.allow_superuser {
            return Err(ConnectError::Unavailable(format!(
                "the PostgreSQL role `{}` is a superuser; connect with a role granted pg_monitor, \
                 or set `[postgres] allow_superuser = true`",
                self.settings.user
            )));
        }
        if !self.superuser_checked.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                user = %self.settings.user,
                "the PostgreSQL role of the runtime is a SUPERUSER (allowed by `[postgres] \
                 allow_superuser`): plugins only run guarded read-only statements, but use a role \
                 with pg_monitor instead"
            );
        }
        Ok(())
    }
}

fn read_password(file: &PathBuf) -> Result<String, String> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        format!(
            "cannot read `postgres.password_file` `{}`: {e}",
            file.display()
        )
    })?;
    Ok(text.lines().next().unwrap_or("").to_owned())
}

/// A driver error as the capability reports it, classified by what the plugin can do about it.
fn query_error(error: &tokio_postgres::Error) -> QueryError {
    use tokio_postgres::error::SqlState;
    let detail = describe(error);
    match error.as_db_error().map(|db| db.code().clone()) {
        Some(SqlState::QUERY_CANCELED) => QueryError::Cancelled(detail),
        Some(SqlState::LOCK_NOT_AVAILABLE) => QueryError::LockTimeout(detail),
        Some(SqlState::READ_ONLY_SQL_TRANSACTION) => QueryError::ReadOnly(detail),
        Some(_) => QueryError::Server(detail),
        None if error.is_closed() => QueryError::Closed(detail),
        None => QueryError::Io(detail),
    }
}

/// A driver error as one line, with the server's message when there is one. Never includes the
/// password (tokio-postgres does not put it in errors).
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(inner) = source {
                text = format!("{text}: {inner}");
                source = inner.source();
            }
            text
        }
    }
}
