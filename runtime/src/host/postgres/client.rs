//! The small interface between the `postgres` capability and a PostgreSQL server: check out a
//! connection to one database, run statements on it, stream a query's rows, give it back.
//!
//! The capability decides everything a plugin may do (grant, guard, read-only transaction,
//! timeouts, row and byte caps) on top of this; an implementation only moves statements and rows.
//! The real one is the tokio-postgres pool ([`super::pool::PgPool`]); unit tests use a fake that
//! records what reaches it, so the capability's guarantees are tested without a server. An
//! implementation must never run anything the capability did not ask for on a plugin's behalf.

use std::future::Future;

use futures_util::stream::BoxStream;

use super::settings::PostgresConfig;
use crate::host::bindings::pganalytics::collector::postgres::Value;

/// Where connections come from.
pub trait Client: Send + Sync + 'static {
    type Connection: Connection;

    /// The `[postgres]` settings in force (which databases may be reached at all).
    fn settings(&self) -> &PostgresConfig;

    /// An open connection to `database` for plugin `owner`: one that only `owner` used before,
    /// or a new one, so no session state (settings, the random seed, prepared statements,
    /// temporary objects) of one plugin is ever seen by another.
    fn checkout(
        &self,
        owner: &str,
        database: &str,
    ) -> impl Future<Output = Result<Self::Connection, ConnectError>> + Send;

    /// Takes back a connection of `owner` after a clean round trip, for reuse by `owner` only.
    /// A connection that is not given back is dropped (and closed).
    fn checkin(&self, owner: &str, database: &str, connection: Self::Connection);
}

/// One connection to one database.
pub trait Connection: Send + 'static {
    /// Bounds each message the server may send from now on to about `max_bytes` (the per-call
    /// limit), failing the connection with [`QueryError::TooLarge`] before a larger one is
    /// buffered. Implementations that buffer nothing need not do anything.
    fn limit_message_bytes(&mut self, max_bytes: usize) {
        let _ = max_bytes;
    }

    /// Runs statements that return no rows (transaction control, `SET LOCAL`).
    fn batch_execute(&mut self, sql: &str) -> impl Future<Output = Result<(), QueryError>> + Send;

    /// Runs one statement with typed parameters over the extended protocol (so the server
    /// refuses a second statement too), its rows decoded as they arrive.
    fn query<'a>(
        &'a mut self,
        sql: &'a str,
        params: &'a [Value],
    ) -> impl Future<Output = Result<RowStream<'a>, QueryError>> + Send + 'a;
}

/// Rows as they arrive; dropping it abandons the rest.
pub type RowStream<'a> = BoxStream<'a, Result<Row, QueryError>>;

/// One decoded row.
#[derive(Debug, Clone)]
pub struct Row {
    /// The column names, on the first row of a result only.
    pub columns: Option<Vec<String>>,
    pub values: Vec<Value>,
}

/// Why a connection could not be made, as the guest will see it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// The database does not exist.
    #[error("{0}")]
    NoSuchDatabase(String),
    /// Anything else: refused, auth failed, timeout.
    #[error("{0}")]
    Unavailable(String),
}

/// Why a statement failed. Each variant holds the server's or driver's own description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// `statement_timeout` (or a cancel) stopped it.
    #[error("the statement was cancelled: {0}")]
    Cancelled(String),
    /// `lock_timeout` expired.
    #[error("{0}")]
    LockTimeout(String),
    /// The read-only transaction refused a write.
    #[error("refused by the server: {0}")]
    ReadOnly(String),
    /// Any other error the server reported (syntax, permissions, missing relation, ...).
    #[error("{0}")]
    Server(String),
    /// The connection is gone.
    #[error("the connection closed: {0}")]
    Closed(String),
    /// The server sent a message over the byte cap of the connection (which is then closed).
    #[error("{0}")]
    TooLarge(String),
    /// A value the host does not convert for the guest.
    #[error("{0}")]
    Decode(String),
    /// Anything else on the way.
    #[error("{0}")]
    Io(String),
}

impl QueryError {
    /// The description alone, without the variant's framing.
    pub fn detail(&self) -> &str {
        match self {
            QueryError::Cancelled(detail)
            | QueryError::LockTimeout(detail)
            | QueryError::ReadOnly(detail)
            | QueryError::Server(detail)
            | QueryError::Closed(detail)
            | QueryError::TooLarge(detail)
            | QueryError::Decode(detail)
            | QueryError::Io(detail) => detail,
        }
    }
}
