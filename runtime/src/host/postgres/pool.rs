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
//!
//! The runtime opens the socket itself (TCP, or the unix socket `.s.PGSQL.PORT` in a `host`
//! directory), negotiates TLS itself ([`super::tls`]), and puts the per-message byte cap of
//! [`super::wire`] on the plaintext protocol before tokio-postgres sees a byte.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::NoTls;

use super::client::{Client, ConnectError, Connection, QueryError, Row, RowStream};
use super::settings::{PostgresConfig, SslMode};
use super::tls::{self, Negotiated};
use super::values;
use super::wire::{CappedStream, DEFAULT_MAX_MESSAGE_BYTES, MESSAGE_HEADROOM, MessageCap};
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
    idle: Mutex<HashMap<(String, String), Vec<PgConnection>>>,
    superuser_checked: AtomicBool,
}

/// A connection checked out of a [`PgPool`], with the byte cap of its stream.
pub struct PgConnection {
    client: tokio_postgres::Client,
    cap: Arc<MessageCap>,
}

/// What a connection runs over: TCP, a unix socket, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

impl Client for PgPool {
    type Connection = PgConnection;

    fn settings(&self) -> &PostgresConfig {
        &self.settings
    }

    async fn checkout(&self, owner: &str, database: &str) -> Result<PgConnection, ConnectError> {
        self.checkout_client(owner, database).await
    }

    fn checkin(&self, owner: &str, database: &str, connection: PgConnection) {
        self.checkin_client(owner, database, connection)
    }
}

impl PgConnection {
    /// A driver error, or the cap of the stream when that is what closed the connection.
    fn error(&self, error: &tokio_postgres::Error) -> QueryError {
        error_or_cap(error, &self.cap)
    }
}

fn error_or_cap(error: &tokio_postgres::Error, cap: &MessageCap) -> QueryError {
    match cap.exceeded() {
        Some(too_large) => QueryError::TooLarge(too_large.to_string()),
        None => query_error(error),
    }
}

impl Connection for PgConnection {
    fn limit_message_bytes(&mut self, max_bytes: usize) {
        self.cap.set(max_bytes.saturating_add(MESSAGE_HEADROOM));
    }

    async fn batch_execute(&mut self, sql: &str) -> Result<(), QueryError> {
        let result = self.client.batch_execute(sql).await;
        result.map_err(|e| self.error(&e))
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
        let result = self.client.query_typed_raw(sql, typed).await;
        let rows = result.map_err(|e| self.error(&e))?;
        let cap = self.cap.clone();
        let mut first = true;
        Ok(rows
            .map(move |row| {
                let row = row.map_err(|e| error_or_cap(&e, &cap))?;
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
    ) -> Result<PgConnection, ConnectError> {
        let key = (owner.to_owned(), database.to_owned());
        loop {
            let candidate = self
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(&key)
                .and_then(Vec::pop);
            match candidate {
                Some(connection) if !connection.client.is_closed() => {
                    connection.cap.set(DEFAULT_MAX_MESSAGE_BYTES);
                    return Ok(connection);
                }
                Some(_dead) => continue,
                None => break,
            }
        }
        let connection = self.connect(database).await?;
        self.refuse_superuser(&connection.client).await?;
        Ok(connection)
    }

    /// Returns a connection of `owner` after a completed query.
    fn checkin_client(&self, owner: &str, database: &str, client: PgConnection) {
        if client.client.is_closed() {
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

    async fn connect(&self, database: &str) -> Result<PgConnection, ConnectError> {
        let s = &self.settings;
        let mut config = tokio_postgres::Config::new();
        config
            .host(&s.host)
            .port(s.port)
            .user(&s.user)
            .dbname(database)
            .application_name(&s.application_name)
            // TLS, when any, is already set up under the stream handed over (see `open`).
            .ssl_mode(tokio_postgres::config::SslMode::Disable);
        if let Some(password) = self.password()? {
            config.password(password);
        }
        let cap = MessageCap::new(DEFAULT_MAX_MESSAGE_BYTES);
        let connecting = async {
            let stream = self.open().await?;
            config
                .connect_raw(CappedStream::new(stream, cap.clone()), NoTls)
                .await
                .map_err(|e| connect_error(database, &e))
        };
        let (client, connection) = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Err(_) => {
                return Err(ConnectError::Unavailable(format!(
                    "connecting to database `{database}` timed out after {}s",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
            Ok(result) => result?,
        };
        let name = database.to_owned();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(database = %name, "postgres connection closed: {e}");
            }
        });
        Ok(PgConnection { client, cap })
    }

    /// The socket to the server, with TLS as `sslmode` asks (never on a unix socket, as libpq).
    async fn open(&self) -> Result<Box<dyn Io>, ConnectError> {
        let s = &self.settings;
        let unavailable = |what: &str, detail: &dyn std::fmt::Display| {
            ConnectError::Unavailable(format!("cannot connect to {what}: {detail}"))
        };
        if s.is_unix_socket() {
            let path = Path::new(&s.host).join(format!(".s.PGSQL.{}", s.port));
            let stream = tokio::net::UnixStream::connect(&path)
                .await
                .map_err(|e| unavailable(&format!("unix socket `{}`", path.display()), &e))?;
            return Ok(Box::new(stream));
        }
        let address = format!("{}:{}", s.host, s.port);
        let stream = tokio::net::TcpStream::connect((s.host.as_str(), s.port))
            .await
            .map_err(|e| unavailable(&format!("`{address}`"), &e))?;
        let _ = stream.set_nodelay(true);
        if s.sslmode == SslMode::Disable {
            return Ok(Box::new(stream));
        }
        match tls::negotiate(stream, s).await {
            Ok(Negotiated::Plain(stream)) => Ok(Box::new(stream)),
            Ok(Negotiated::Tls(session)) => Ok(Box::new(session)),
            Err(e) => Err(unavailable(&format!("`{address}`"), &e)),
        }
    }

    fn password(&self) -> Result<Option<String>, ConnectError> {
        if let Some(password) = &self.settings.password {
            return Ok(Some(password.clone()));
        }
        let Some(file) = &self.settings.password_file else {
            return Ok(None);
        };
        read_password(file, &self.settings.section)
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
                 or set `[{}] allow_superuser = true`",
                self.settings.user, self.settings.section
            )));
        }
        if !self.superuser_checked.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                user = %self.settings.user,
                server = %self.settings.name,
                "the PostgreSQL role of the runtime is a SUPERUSER (allowed by `[postgres] \
                 allow_superuser`): plugins only run guarded read-only statements, but use a role \
                 with pg_monitor instead"
            );
        }
        Ok(())
    }
}

fn read_password(file: &PathBuf, section: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        format!(
            "cannot read `{section}.password_file` `{}`: {e}",
            file.display()
        )
    })?;
    Ok(text.lines().next().unwrap_or("").to_owned())
}

/// Why a connection attempt failed, as the capability reports it.
fn connect_error(database: &str, error: &tokio_postgres::Error) -> ConnectError {
    if error
        .as_db_error()
        .is_some_and(|db| db.code() == &tokio_postgres::error::SqlState::INVALID_CATALOG_NAME)
    {
        return ConnectError::NoSuchDatabase(format!("database `{database}` does not exist"));
    }
    ConnectError::Unavailable(format!(
        "cannot connect to database `{database}`: {}",
        describe(error)
    ))
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
