//! The `[postgres]` section: how the runtime connects for the `postgres` capability, as written
//! ([`RawPostgres`]) and validated ([`PostgresConfig`]).
//!
//! These are the operator's connection settings, never a plugin's: a plugin's grant only narrows
//! which of the permitted databases it may query. Validation must never read the password file
//! (it is read at connection time, so a rotated password is picked up without a reload).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `[postgres]`: how the runtime connects for the `postgres` capability.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPostgres {
    /// Server host name, address or unix socket directory (default `localhost`).
    pub host: Option<String>,
    /// Server port (default 5432).
    pub port: Option<u16>,
    /// The monitoring role (pg_monitor); the runtime warns loudly when it is a superuser.
    pub user: Option<String>,
    /// Inline password; prefer `password_file`.
    pub password: Option<String>,
    /// File holding the password (first line), readable by the agent only.
    pub password_file: Option<PathBuf>,
    /// `disable` or `prefer` (no TLS connector for PostgreSQL yet: use the unix socket or
    /// localhost).
    pub sslmode: Option<String>,
    /// Databases the runtime may connect to at all (default `["*"]`); a plugin's grant is
    /// narrowed to these.
    pub databases: Option<Vec<String>>,
    /// Database used to list the others (default `postgres`).
    pub maintenance_db: Option<String>,
    /// Run with a superuser role (default false: the runtime refuses to start with `user =
    /// "postgres"` and refuses every connection whose role is a superuser).
    pub allow_superuser: Option<bool>,
}

/// The validated `[postgres]` section.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub sslmode: String,
    pub databases: Vec<String>,
    pub maintenance_db: String,
    pub allow_superuser: bool,
}

/// What is wrong with a `[postgres]` section; [`PostgresSettingsError::key`] names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostgresSettingsError {
    #[error("set `password` or `password_file`, not both")]
    PasswordTwice,
    #[error("`{0}` is not disable, prefer or require")]
    SslMode(String),
    #[error(
        "`postgres` is the bootstrap superuser; connect with a role granted pg_monitor, or set \
         `allow_superuser = true`"
    )]
    Superuser,
}

impl PostgresSettingsError {
    /// The key of `[postgres]` at fault.
    pub fn key(&self) -> &'static str {
        match self {
            PostgresSettingsError::PasswordTwice => "password",
            PostgresSettingsError::SslMode(_) => "sslmode",
            PostgresSettingsError::Superuser => "user",
        }
    }
}

impl RawPostgres {
    /// Validates the section; `resolve` anchors a relative `password_file` (at the config
    /// file's directory). Every problem is returned, not just the first.
    pub fn validate(
        self,
        resolve: impl Fn(&Path) -> PathBuf,
    ) -> Result<PostgresConfig, Vec<PostgresSettingsError>> {
        let mut problems = Vec::new();
        if self.password.is_some() && self.password_file.is_some() {
            problems.push(PostgresSettingsError::PasswordTwice);
        }
        let sslmode = self.sslmode.unwrap_or_else(|| "prefer".into());
        if !["disable", "prefer", "require"].contains(&sslmode.as_str()) {
            problems.push(PostgresSettingsError::SslMode(sslmode.clone()));
        }
        let allow_superuser = self.allow_superuser.unwrap_or(false);
        if self.user.as_deref() == Some("postgres") && !allow_superuser {
            problems.push(PostgresSettingsError::Superuser);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(PostgresConfig {
            host: self.host.unwrap_or_else(|| "localhost".into()),
            port: self.port.unwrap_or(5432),
            user: self.user.unwrap_or_else(|| "pganalytics".into()),
            password: self.password,
            password_file: self.password_file.map(|p| resolve(&p)),
            sslmode,
            databases: self.databases.unwrap_or_else(|| vec!["*".into()]),
            maintenance_db: self.maintenance_db.unwrap_or_else(|| "postgres".into()),
            allow_superuser,
        })
    }
}

impl PostgresConfig {
    /// Whether the runtime may connect to `database` at all.
    pub fn permits(&self, database: &str) -> bool {
        self.databases.iter().any(|d| d == "*" || d == database)
    }

    /// Settings that point nowhere, for unit tests that must never reach a server.
    #[cfg(test)]
    pub fn unreachable_for_tests() -> Self {
        Self {
            host: "/nonexistent".into(),
            port: 1,
            user: "nobody".into(),
            password: None,
            password_file: None,
            sslmode: "disable".into(),
            databases: vec!["*".into()],
            maintenance_db: "postgres".into(),
            allow_superuser: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawPostgres {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn defaults_fill_in_and_relative_password_files_are_resolved() {
        let config = raw("password_file = \"pw\"")
            .validate(|p| Path::new("/etc/pganalytics").join(p))
            .unwrap();
        assert_eq!(config.host, "localhost");
        assert_eq!(config.port, 5432);
        assert_eq!(config.user, "pganalytics");
        assert_eq!(config.sslmode, "prefer");
        assert_eq!(config.maintenance_db, "postgres");
        assert_eq!(
            config.password_file.as_deref(),
            Some(Path::new("/etc/pganalytics/pw"))
        );
        assert!(config.permits("anything"));
    }

    #[test]
    fn every_problem_is_named_by_its_key() {
        let problems = raw("password = \"x\"\npassword_file = \"pw\"\nsslmode = \"verify-full\"")
            .validate(Path::to_path_buf)
            .unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key()).collect();
        assert_eq!(keys, ["password", "sslmode"]);
        let superuser = raw("user = \"postgres\"").validate(Path::to_path_buf).unwrap_err();
        assert_eq!(superuser[0].key(), "user");
        assert!(superuser[0].to_string().contains("allow_superuser = true"));
        let allowed = raw("user = \"postgres\"\nallow_superuser = true")
            .validate(Path::to_path_buf)
            .unwrap();
        assert!(allowed.allow_superuser);
        assert_eq!(
            problems[1].to_string(),
            "`verify-full` is not disable, prefer or require"
        );
    }

    #[test]
    fn only_listed_databases_are_permitted() {
        let config = raw("databases = [\"app\", \"postgres\"]")
            .validate(Path::to_path_buf)
            .unwrap();
        assert!(config.permits("app") && config.permits("postgres"));
        assert!(!config.permits("secret"));
    }
}
