//! The `[postgres]` section: how the runtime connects for the `postgres` capability, as written
//! ([`RawPostgres`]) and validated ([`PostgresConfig`]).
//!
//! These are the operator's connection settings, never a plugin's: a plugin's grant only narrows
//! which of the permitted databases it may query. Validation must never read the password file
//! or the TLS files (they are read at connection time, so a rotated password or certificate is
//! picked up without a reload).
//!
//! Two things come from the agent's environment, both only here and both before validation:
//! - `${NAME}` in a string value of `[postgres]` is replaced by the variable `NAME` (an unset one
//!   is an error naming the key and the variable; `$$` is a literal `$`). Only `[postgres]` string
//!   values expand, never a plugin's settings.
//! - A key the section omits falls back to the libpq variable for it (`PGHOST`, `PGPORT`,
//!   `PGUSER`, `PGPASSWORD`, `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT`, `PGSSLKEY`,
//!   `PGDATABASE` for `maintenance_db`, `PGAPPNAME` for `application_name`), then to the default.
//!
//! Several servers: `[postgres.servers.NAME]` tables take the same keys as `[postgres]` and
//! inherit nothing from it (each falls back to the environment and the defaults on its own).
//! `[postgres]` itself is the server named `default` when it sets any key besides `servers`, or
//! has no `servers` table at all; see [`RawPostgres::servers_with_env`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `[postgres]`: how the runtime connects for the `postgres` capability.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPostgres {
    /// Server host name, address or unix socket directory (default `PGHOST`, then `localhost`).
    pub host: Option<String>,
    /// Server port (default `PGPORT`, then 5432).
    pub port: Option<u16>,
    /// The monitoring role (pg_monitor); the runtime warns loudly when it is a superuser.
    pub user: Option<String>,
    /// Inline password; prefer `password_file`.
    pub password: Option<String>,
    /// File holding the password (first line), readable by the agent only.
    pub password_file: Option<PathBuf>,
    /// `disable`, `prefer` (default), `require`, `verify-ca` or `verify-full`, as libpq.
    pub sslmode: Option<String>,
    /// CA certificates (PEM) the server's certificate must chain to; needed by `verify-ca` and
    /// `verify-full`, and turns `require` into `verify-ca` as in libpq.
    pub sslrootcert: Option<PathBuf>,
    /// Client certificate chain (PEM) for certificate authentication; needs `sslkey`.
    pub sslcert: Option<PathBuf>,
    /// Private key (PEM) of `sslcert`.
    pub sslkey: Option<PathBuf>,
    /// `application_name` of the runtime's sessions (default `PGAPPNAME`, then `pganalytics`).
    pub application_name: Option<String>,
    /// Databases the runtime may connect to at all (default `["*"]`); a plugin's grant is
    /// narrowed to these.
    pub databases: Option<Vec<String>>,
    /// Database used to list the others (default `PGDATABASE`, then `postgres`).
    pub maintenance_db: Option<String>,
    /// Run with a superuser role (default false: the runtime refuses to start with `user =
    /// "postgres"` and refuses every connection whose role is a superuser).
    pub allow_superuser: Option<bool>,
    /// `[postgres.servers.NAME]`: further servers, each with the keys above and nothing
    /// inherited from `[postgres]`.
    pub servers: Option<BTreeMap<String, RawPostgres>>,
}

/// The name of the server `[postgres]` itself describes.
pub const DEFAULT_SERVER: &str = "default";

/// The validated servers by name (empty: no `[postgres]` section).
pub type PostgresServers = BTreeMap<String, PostgresConfig>;

/// Whether `name` may name a server: `[a-z0-9_-]{1,32}`.
pub fn valid_server_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// A problem of one server of `[postgres]`: [`ServerProblem::key`] is the full dotted key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct ServerProblem {
    /// `postgres` or `postgres.servers.NAME`.
    pub section: String,
    pub error: PostgresSettingsError,
}

impl ServerProblem {
    /// The dotted key at fault, e.g. `postgres.servers.replica.port`.
    pub fn key(&self) -> String {
        match self.error {
            // The problem is the table's name itself.
            PostgresSettingsError::ServerName(_) | PostgresSettingsError::DefaultTwice => {
                self.section.clone()
            }
            _ => format!("{}.{}", self.section, self.error.key()),
        }
    }
}

/// How TLS is used to reach the server, with libpq's meaning of each mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it (certificate not verified), else plaintext.
    Prefer,
    /// TLS or no connection; the certificate is not verified (unless `sslrootcert` is set, which
    /// makes it [`SslMode::VerifyCa`], as libpq does).
    Require,
    /// TLS with a certificate chaining to `sslrootcert`, any host name.
    VerifyCa,
    /// [`SslMode::VerifyCa`], and the certificate must name `host`.
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The validated `[postgres]` section.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// The server's name: `default` for `[postgres]`, else its key in `[postgres.servers]`.
    pub name: String,
    /// The table it was written in, for messages: `postgres` or `postgres.servers.NAME`.
    pub section: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    /// The mode in force: `require` with `sslrootcert` is already [`SslMode::VerifyCa`] here.
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
    pub application_name: String,
    pub databases: Vec<String>,
    pub maintenance_db: String,
    pub allow_superuser: bool,
}

/// What is wrong with a `[postgres]` section; [`PostgresSettingsError::key`] names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostgresSettingsError {
    #[error("set `password` or `password_file`, not both")]
    PasswordTwice,
    #[error("`{0}` is not disable, prefer, require, verify-ca or verify-full")]
    SslMode(String),
    #[error(
        "`postgres` is the bootstrap superuser; connect with a role granted pg_monitor, or set \
         `allow_superuser = true`"
    )]
    Superuser,
    #[error("sslmode `{0}` verifies the server's certificate: set `sslrootcert` to the CA file")]
    NoRootCert(SslMode),
    #[error("`sslcert` and `sslkey` go together: set both or neither")]
    CertWithoutKey,
    #[error("the environment variable `{variable}` is not set (named by `${{{variable}}}`)")]
    UnsetVariable { key: &'static str, variable: String },
    #[error(
        "`{text}` has a `${{` without a closing `}}` or an invalid variable name (write `$$` for a literal `$`)"
    )]
    BadReference { key: &'static str, text: String },
    #[error("a server name may only be 1 to 32 of `a-z`, `0-9`, `_` and `-`, not `{0}`")]
    ServerName(String),
    #[error(
        "`[postgres]` sets connection keys, so it already is the server `default`; rename this \
         server or move its keys to `[postgres]`"
    )]
    DefaultTwice,
    #[error("`servers` may only appear in `[postgres]`, not inside a server")]
    NestedServers,
    #[error("`{value}` (from `{variable}`) is not a port number")]
    EnvPort {
        variable: &'static str,
        value: String,
    },
}

impl PostgresSettingsError {
    /// The key of `[postgres]` at fault.
    pub fn key(&self) -> &'static str {
        match self {
            PostgresSettingsError::PasswordTwice => "password",
            PostgresSettingsError::SslMode(_) => "sslmode",
            PostgresSettingsError::Superuser => "user",
            PostgresSettingsError::NoRootCert(_) => "sslrootcert",
            PostgresSettingsError::CertWithoutKey => "sslkey",
            PostgresSettingsError::UnsetVariable { key, .. }
            | PostgresSettingsError::BadReference { key, .. } => key,
            PostgresSettingsError::EnvPort { .. } => "port",
            PostgresSettingsError::ServerName(_) | PostgresSettingsError::DefaultTwice => "servers",
            PostgresSettingsError::NestedServers => "servers",
        }
    }
}

/// Replaces `${NAME}` in `text` by the value of `NAME`; `$$` is a literal `$`, and a `$` before
/// anything else is kept as written.
fn expand(
    key: &'static str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, PostgresSettingsError> {
    let bad = || PostgresSettingsError::BadReference {
        key,
        text: text.to_owned(),
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(reference) = after.strip_prefix('{') {
            let end = reference.find('}').ok_or_else(bad)?;
            let name = &reference[..end];
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(bad());
            }
            let value = env(name).ok_or_else(|| PostgresSettingsError::UnsetVariable {
                key,
                variable: name.to_owned(),
            })?;
            out.push_str(&value);
            rest = &reference[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Expands every string value of the section, collecting every problem.
struct Expander<'e> {
    env: &'e dyn Fn(&str) -> Option<String>,
    problems: Vec<PostgresSettingsError>,
}

impl Expander<'_> {
    fn text(&mut self, key: &'static str, value: Option<String>) -> Option<String> {
        let value = value?;
        match expand(key, &value, self.env) {
            Ok(expanded) => Some(expanded),
            Err(problem) => {
                self.problems.push(problem);
                None
            }
        }
    }

    fn path(&mut self, key: &'static str, value: Option<PathBuf>) -> Option<PathBuf> {
        let value = value?;
        // A path that is not UTF-8 cannot hold a `${NAME}` written in TOML; keep it as is.
        match value.to_str() {
            Some(text) => self.text(key, Some(text.to_owned())).map(PathBuf::from),
            None => Some(value),
        }
    }

    /// The value as written (expanded), else the environment variable `variable`.
    fn or_env(
        &mut self,
        key: &'static str,
        value: Option<String>,
        variable: &str,
    ) -> Option<String> {
        match value {
            Some(_) => self.text(key, value),
            None => (self.env)(variable).filter(|v| !v.is_empty()),
        }
    }
}

impl RawPostgres {
    /// Whether the table sets any connection key (anything but `servers`).
    fn sets_connection_keys(&self) -> bool {
        let RawPostgres {
            host,
            port,
            user,
            password,
            password_file,
            sslmode,
            sslrootcert,
            sslcert,
            sslkey,
            application_name,
            databases,
            maintenance_db,
            allow_superuser,
            servers: _,
        } = self;
        host.is_some()
            || port.is_some()
            || user.is_some()
            || password.is_some()
            || password_file.is_some()
            || sslmode.is_some()
            || sslrootcert.is_some()
            || sslcert.is_some()
            || sslkey.is_some()
            || application_name.is_some()
            || databases.is_some()
            || maintenance_db.is_some()
            || allow_superuser.is_some()
    }

    /// Validates the whole section, `[postgres]` and every `[postgres.servers.NAME]`, with the
    /// agent's environment; `resolve` anchors relative paths (at the config file's directory).
    /// Every problem of every server is returned, not just the first.
    pub fn servers(
        self,
        resolve: impl Fn(&Path) -> PathBuf,
    ) -> Result<PostgresServers, Vec<ServerProblem>> {
        self.servers_with_env(resolve, &|name| std::env::var(name).ok())
    }

    /// [`Self::servers`] with `env` as the environment.
    ///
    /// `[postgres]` is the server `default` when it sets any connection key or has no
    /// `servers` table; a `[postgres.servers.default]` is then an error. Each server is
    /// validated on its own: nothing is inherited from `[postgres]`.
    pub fn servers_with_env(
        mut self,
        resolve: impl Fn(&Path) -> PathBuf,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PostgresServers, Vec<ServerProblem>> {
        let tables = self.servers.take();
        let top_is_default = self.sets_connection_keys() || tables.is_none();
        let mut servers = PostgresServers::new();
        let mut problems = Vec::new();
        if top_is_default {
            match self.validate_with_env(&resolve, env) {
                Ok(config) => {
                    servers.insert(DEFAULT_SERVER.to_owned(), config);
                }
                Err(errors) => problems.extend(errors.into_iter().map(|error| ServerProblem {
                    section: "postgres".to_owned(),
                    error,
                })),
            }
        }
        for (name, mut table) in tables.unwrap_or_default() {
            let section = format!("postgres.servers.{name}");
            let problem = |error| ServerProblem {
                section: section.clone(),
                error,
            };
            if !valid_server_name(&name) {
                problems.push(problem(PostgresSettingsError::ServerName(name)));
                continue;
            }
            if name == DEFAULT_SERVER && top_is_default {
                problems.push(problem(PostgresSettingsError::DefaultTwice));
                continue;
            }
            if table.servers.take().is_some() {
                problems.push(problem(PostgresSettingsError::NestedServers));
                continue;
            }
            match table.validate_with_env(&resolve, env) {
                Ok(mut config) => {
                    config.name = name.clone();
                    config.section = section.clone();
                    servers.insert(name, config);
                }
                Err(errors) => problems.extend(errors.into_iter().map(problem)),
            }
        }
        if problems.is_empty() {
            Ok(servers)
        } else {
            Err(problems)
        }
    }

    /// Validates one server's keys (`servers` aside) as the server `default`, with `env` as the
    /// environment. Every problem is returned, not just the first.
    pub fn validate_with_env(
        self,
        resolve: impl Fn(&Path) -> PathBuf,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PostgresConfig, Vec<PostgresSettingsError>> {
        let mut x = Expander {
            env,
            problems: Vec::new(),
        };
        let host = x.or_env("host", self.host, "PGHOST");
        let user = x.or_env("user", self.user, "PGUSER");
        let password_twice = self.password.is_some() && self.password_file.is_some();
        let password = match self.password {
            Some(_) => x.text("password", self.password),
            // PGPASSWORD only when the section names no password at all.
            None if self.password_file.is_none() => env("PGPASSWORD").filter(|v| !v.is_empty()),
            None => None,
        };
        let password_file = x.path("password_file", self.password_file);
        let sslmode_text = x.or_env("sslmode", self.sslmode, "PGSSLMODE");
        let sslrootcert = match self.sslrootcert {
            Some(_) => x.path("sslrootcert", self.sslrootcert),
            None => env("PGSSLROOTCERT")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        };
        let sslcert = match self.sslcert {
            Some(_) => x.path("sslcert", self.sslcert),
            None => env("PGSSLCERT")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        };
        let sslkey = match self.sslkey {
            Some(_) => x.path("sslkey", self.sslkey),
            None => env("PGSSLKEY").filter(|v| !v.is_empty()).map(PathBuf::from),
        };
        let application_name = x.or_env("application_name", self.application_name, "PGAPPNAME");
        let maintenance_db = x.or_env("maintenance_db", self.maintenance_db, "PGDATABASE");
        let databases = self.databases.map(|list| {
            list.into_iter()
                .filter_map(|d| x.text("databases", Some(d)))
                .collect::<Vec<_>>()
        });
        let port = match self.port {
            Some(port) => port,
            None => match env("PGPORT").filter(|v| !v.is_empty()) {
                None => 5432,
                Some(value) => value.parse().unwrap_or_else(|_| {
                    x.problems.push(PostgresSettingsError::EnvPort {
                        variable: "PGPORT",
                        value,
                    });
                    5432
                }),
            },
        };
        let mut problems = x.problems;

        if password_twice {
            problems.push(PostgresSettingsError::PasswordTwice);
        }
        let sslmode = match sslmode_text.as_deref() {
            None => SslMode::Prefer,
            Some(text) => SslMode::parse(text).unwrap_or_else(|| {
                problems.push(PostgresSettingsError::SslMode(text.to_owned()));
                SslMode::Prefer
            }),
        };
        // libpq: `require` with a root certificate verifies the chain, like `verify-ca`.
        let sslmode = match (sslmode, &sslrootcert) {
            (SslMode::Require, Some(_)) => SslMode::VerifyCa,
            (mode, _) => mode,
        };
        if matches!(sslmode, SslMode::VerifyCa | SslMode::VerifyFull) && sslrootcert.is_none() {
            problems.push(PostgresSettingsError::NoRootCert(sslmode));
        }
        if sslcert.is_some() != sslkey.is_some() {
            problems.push(PostgresSettingsError::CertWithoutKey);
        }
        let allow_superuser = self.allow_superuser.unwrap_or(false);
        if user.as_deref() == Some("postgres") && !allow_superuser {
            problems.push(PostgresSettingsError::Superuser);
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(PostgresConfig {
            name: DEFAULT_SERVER.to_owned(),
            section: "postgres".to_owned(),
            host: host.unwrap_or_else(|| "localhost".into()),
            port,
            user: user.unwrap_or_else(|| "pganalytics".into()),
            password,
            password_file: password_file.map(|p| resolve(&p)),
            sslmode,
            sslrootcert: sslrootcert.map(|p| resolve(&p)),
            sslcert: sslcert.map(|p| resolve(&p)),
            sslkey: sslkey.map(|p| resolve(&p)),
            application_name: application_name.unwrap_or_else(|| "pganalytics".into()),
            databases: databases.unwrap_or_else(|| vec!["*".into()]),
            maintenance_db: maintenance_db.unwrap_or_else(|| "postgres".into()),
            allow_superuser,
        })
    }
}

impl PostgresConfig {
    /// Whether the runtime may connect to `database` at all.
    pub fn permits(&self, database: &str) -> bool {
        self.databases.iter().any(|d| d == "*" || d == database)
    }

    /// The whole dotted name of one of this server's keys, for messages:
    /// `postgres.sslrootcert`, `postgres.servers.replica.sslrootcert`.
    pub fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.section)
    }

    /// Whether `host` is a unix socket directory rather than a TCP host (as libpq: an absolute
    /// path). TLS is never used on a unix socket, whatever `sslmode` says (as libpq).
    pub fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// Settings that point nowhere, for unit tests that must never reach a server.
    #[cfg(test)]
    pub fn unreachable_for_tests() -> Self {
        Self {
            name: DEFAULT_SERVER.to_owned(),
            section: "postgres".to_owned(),
            host: "/nonexistent".into(),
            port: 1,
            user: "nobody".into(),
            password: None,
            password_file: None,
            sslmode: SslMode::Disable,
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
            application_name: "pganalytics".into(),
            databases: vec!["*".into()],
            maintenance_db: "postgres".into(),
            allow_superuser: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn raw(text: &str) -> RawPostgres {
        toml::from_str(text).unwrap()
    }

    fn with_env(
        text: &str,
        vars: &[(&str, &str)],
    ) -> Result<PostgresConfig, Vec<PostgresSettingsError>> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        raw(text).validate_with_env(|p| Path::new("/etc/pganalytics").join(p), &|name| {
            vars.get(name).cloned()
        })
    }

    #[test]
    fn defaults_fill_in_and_relative_paths_are_resolved() {
        let config = with_env(
            "password_file = \"pw\"\nsslmode = \"verify-full\"\nsslrootcert = \"ca.pem\"",
            &[],
        )
        .unwrap();
        assert_eq!(config.host, "localhost");
        assert_eq!(config.port, 5432);
        assert_eq!(config.user, "pganalytics");
        assert_eq!(config.sslmode, SslMode::VerifyFull);
        assert_eq!(config.maintenance_db, "postgres");
        assert_eq!(config.application_name, "pganalytics");
        assert_eq!(
            config.password_file.as_deref(),
            Some(Path::new("/etc/pganalytics/pw"))
        );
        assert_eq!(
            config.sslrootcert.as_deref(),
            Some(Path::new("/etc/pganalytics/ca.pem"))
        );
        assert!(config.permits("anything"));
        assert_eq!(with_env("", &[]).unwrap().sslmode, SslMode::Prefer);
    }

    #[test]
    fn every_problem_is_named_by_its_key() {
        let problems = with_env(
            "password = \"x\"\npassword_file = \"pw\"\nsslmode = \"verify-fully\"\nsslcert = \"c\"",
            &[],
        )
        .unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key()).collect();
        assert_eq!(keys, ["password", "sslmode", "sslkey"]);
        let superuser = with_env("user = \"postgres\"", &[]).unwrap_err();
        assert_eq!(superuser[0].key(), "user");
        assert!(superuser[0].to_string().contains("allow_superuser = true"));
        // The same role named by the environment is refused the same way.
        let from_env = with_env("", &[("PGUSER", "postgres")]).unwrap_err();
        assert_eq!(from_env[0].key(), "user");
        let allowed = with_env("user = \"postgres\"\nallow_superuser = true", &[]).unwrap();
        assert!(allowed.allow_superuser);
        assert_eq!(
            problems[1].to_string(),
            "`verify-fully` is not disable, prefer, require, verify-ca or verify-full"
        );
    }

    #[test]
    fn every_sslmode_of_libpq_is_accepted_and_require_with_a_root_cert_verifies() {
        for (mode, expected) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
        ] {
            let config = with_env(&format!("sslmode = {mode:?}"), &[]).unwrap();
            assert_eq!(config.sslmode, expected);
        }
        let config = with_env("sslmode = \"require\"\nsslrootcert = \"/ca.pem\"", &[]).unwrap();
        assert_eq!(config.sslmode, SslMode::VerifyCa);
        for mode in ["verify-ca", "verify-full"] {
            let problems = with_env(&format!("sslmode = {mode:?}"), &[]).unwrap_err();
            assert_eq!(problems[0].key(), "sslrootcert");
            assert!(problems[0].to_string().contains(mode), "{}", problems[0]);
        }
    }

    #[test]
    fn only_listed_databases_are_permitted() {
        let config = with_env("databases = [\"app\", \"postgres\"]", &[]).unwrap();
        assert!(config.permits("app") && config.permits("postgres"));
        assert!(!config.permits("secret"));
    }

    #[test]
    fn pg_variables_fill_omitted_keys_only() {
        let env = [
            ("PGHOST", "db.example"),
            ("PGPORT", "6543"),
            ("PGUSER", "monitor"),
            ("PGPASSWORD", "from-env"),
            ("PGSSLMODE", "verify-full"),
            ("PGSSLROOTCERT", "/etc/ssl/pg-ca.pem"),
            ("PGDATABASE", "maint"),
            ("PGAPPNAME", "agent-7"),
        ];
        let config = with_env("", &env).unwrap();
        assert_eq!(config.host, "db.example");
        assert_eq!(config.port, 6543);
        assert_eq!(config.user, "monitor");
        assert_eq!(config.password.as_deref(), Some("from-env"));
        assert_eq!(config.sslmode, SslMode::VerifyFull);
        assert_eq!(
            config.sslrootcert.as_deref(),
            Some(Path::new("/etc/ssl/pg-ca.pem"))
        );
        assert_eq!(config.maintenance_db, "maint");
        assert_eq!(config.application_name, "agent-7");

        let config = with_env(
            "host = \"/run/postgresql\"\nport = 5433\nuser = \"u\"\npassword_file = \"pw\"\nsslmode = \"disable\"\nmaintenance_db = \"m\"\napplication_name = \"a\"",
            &env,
        )
        .unwrap();
        assert_eq!(config.host, "/run/postgresql");
        assert_eq!(config.port, 5433);
        assert_eq!(config.user, "u");
        assert_eq!(
            config.password, None,
            "PGPASSWORD must not override password_file"
        );
        assert_eq!(config.sslmode, SslMode::Disable);
        assert_eq!(config.maintenance_db, "m");
        assert_eq!(config.application_name, "a");

        let problems = with_env("", &[("PGPORT", "54x")]).unwrap_err();
        assert_eq!(problems[0].key(), "port");
        assert!(problems[0].to_string().contains("PGPORT"));
    }

    #[test]
    fn variables_expand_in_every_string_value() {
        let env = [
            ("PGH", "10.0.0.5"),
            ("TENANT", "acme"),
            ("SECRETS", "/run/secrets"),
        ];
        let config = with_env(
            "host = \"${PGH}\"\nuser = \"mon_${TENANT}\"\npassword_file = \"${SECRETS}/pg\"\ndatabases = [\"${TENANT}_app\", \"postgres\"]\napplication_name = \"cost: $$5 and $x\"",
            &env,
        )
        .unwrap();
        assert_eq!(config.host, "10.0.0.5");
        assert_eq!(config.user, "mon_acme");
        assert_eq!(
            config.password_file.as_deref(),
            Some(Path::new("/run/secrets/pg"))
        );
        assert_eq!(config.databases, ["acme_app", "postgres"]);
        assert_eq!(config.application_name, "cost: $5 and $x");
    }

    #[test]
    fn an_unset_or_malformed_variable_names_the_key_and_the_variable() {
        let problems = with_env(
            "host = \"${NOPE}\"\npassword = \"${ALSO_NOPE}\"\nuser = \"${unterminated\"\nmaintenance_db = \"${1x}\"",
            &[],
        )
        .unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key()).collect();
        assert_eq!(keys, ["host", "user", "password", "maintenance_db"]);
        assert_eq!(
            problems[0].to_string(),
            "the environment variable `NOPE` is not set (named by `${NOPE}`)"
        );
        assert!(problems[2].to_string().contains("ALSO_NOPE"));
        assert!(problems[1].to_string().contains("`${unterminated`"));
    }

    fn servers(text: &str, vars: &[(&str, &str)]) -> Result<PostgresServers, Vec<ServerProblem>> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        raw(text).servers_with_env(|p| Path::new("/etc/pganalytics").join(p), &|name| {
            vars.get(name).cloned()
        })
    }

    fn names(servers: &PostgresServers) -> Vec<&str> {
        servers.keys().map(String::as_str).collect()
    }

    #[test]
    fn postgres_alone_is_the_default_server() {
        let only = servers("host = \"/run/a\"\nport = 5433", &[]).unwrap();
        assert_eq!(names(&only), ["default"]);
        assert_eq!(only["default"].name, "default");
        assert_eq!(only["default"].port, 5433);
        // An empty `[postgres]` is still the default server, with every default.
        let empty = servers("", &[]).unwrap();
        assert_eq!(names(&empty), ["default"]);
        assert_eq!(empty["default"].host, "localhost");
    }

    #[test]
    fn servers_sit_beside_the_default_and_inherit_nothing() {
        let both = servers(
            "host = \"/run/a\"\nuser = \"mon\"\ndatabases = [\"app\"]\n\
             [servers.replica]\nhost = \"/run/b\"\nport = 6000\n\
             [servers.analytics-2]\nhost = \"db2\"\nsslmode = \"disable\"",
            &[],
        )
        .unwrap();
        assert_eq!(names(&both), ["analytics-2", "default", "replica"]);
        let replica = &both["replica"];
        assert_eq!(replica.name, "replica");
        assert_eq!(replica.section, "postgres.servers.replica");
        assert_eq!(both["default"].section, "postgres");
        assert_eq!((replica.host.as_str(), replica.port), ("/run/b", 6000));
        // Not `mon` nor `["app"]`: a server takes nothing from `[postgres]`.
        assert_eq!(replica.user, "pganalytics");
        assert_eq!(replica.databases, ["*"]);
        assert_eq!(both["default"].databases, ["app"]);
        assert_eq!(both["analytics-2"].sslmode, SslMode::Disable);
    }

    #[test]
    fn servers_alone_have_no_default() {
        let only = servers(
            "[servers.a]\nhost = \"/run/a\"\n[servers.default]\nhost = \"/run/d\"",
            &[],
        )
        .unwrap();
        assert_eq!(names(&only), ["a", "default"]);
        assert_eq!(only["default"].host, "/run/d");
        let only = servers("[servers.b]\nport = 7000", &[]).unwrap();
        assert_eq!(names(&only), ["b"]);
    }

    #[test]
    fn bad_names_a_second_default_and_nesting_are_named_by_key() {
        let problems = servers(
            "port = 5433\n[servers.default]\nport = 1\n[servers.Replica]\nport = 2\n\
             [servers.x]\nport = 3\n[servers.x.servers.y]\nport = 4\n[servers.b]\nsslmode = \"nope\"",
            &[],
        )
        .unwrap_err();
        let keys: Vec<String> = problems.iter().map(ServerProblem::key).collect();
        assert_eq!(
            keys,
            [
                "postgres.servers.Replica",
                "postgres.servers.b.sslmode",
                "postgres.servers.default",
                "postgres.servers.x.servers",
            ]
        );
        assert!(
            problems[0].to_string().contains("`Replica`"),
            "{}",
            problems[0]
        );
        assert!(
            problems[2]
                .to_string()
                .contains("already is the server `default`")
        );
        for bad in ["", "a.b", "a b", "é", &*"x".repeat(33)] {
            assert!(!valid_server_name(bad), "{bad:?}");
        }
        for good in ["a", "replica_2", "eu-west-1", &*"x".repeat(32)] {
            assert!(valid_server_name(good), "{good:?}");
        }
    }

    #[test]
    fn pg_variables_and_expansion_apply_to_each_server() {
        let env = [
            ("PGHOST", "envhost"),
            ("PGUSER", "envuser"),
            ("B_PORT", "x"),
        ];
        let both = servers(
            "host = \"/run/a\"\n[servers.b]\nuser = \"b_${PGHOST}\"\n[servers.c]\nport = 6000",
            &env,
        )
        .unwrap();
        assert_eq!(both["default"].host, "/run/a");
        assert_eq!(both["default"].user, "envuser");
        assert_eq!(both["b"].host, "envhost");
        assert_eq!(both["b"].user, "b_envhost");
        assert_eq!((both["c"].host.as_str(), both["c"].port), ("envhost", 6000));
        let problems = servers("[servers.b]\nhost = \"${NOPE}\"", &env).unwrap_err();
        assert_eq!(problems[0].key(), "postgres.servers.b.host");
        assert!(problems[0].to_string().contains("NOPE"));
    }
}
