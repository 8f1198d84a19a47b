//! Operator configuration, in two stages: the TOML as written (`raw`, unknown keys rejected) and
//! the validated [`Config`] the rest of the runtime uses (`model`: parsed durations and sizes,
//! resolved paths, compiled grants, limits with their defaults), built by `check`.
//!
//! Every problem is reported, not just the first: each section is deserialised on its own, and
//! each [`Problem`] names the file, the key and the line. Capabilities own their grant tables and
//! sections (`crate::host`); config places their typed errors at the right key.

mod check;
mod model;
mod problem;
pub mod raw;

use std::path::Path;

pub use crate::plugin::PluginConfig;
pub use model::{
    BackendConfig, BufferConfig, CollectorConfig, Compression, Config, DEFAULT_INTERVAL,
    DEFAULT_SPOOL_BYTES, DEFAULT_UNHEALTHY_AFTER_PUSH_INTERVALS, LogFormat, PostgresConfig,
    TlsConfig, TrustConfig, system_hostname,
};
pub use problem::{ConfigError, Problem};

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![Problem {
            file: path.to_path_buf(),
            line: None,
            key: String::new(),
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    parse(&text, path)
}

/// Validates config text; `path` names the file in errors and anchors relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let mut checker = check::Checker::new(path.to_path_buf(), text);
    let config = checker.check();
    let problems = checker.into_problems();
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(ConfigError { problems }),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::plugin::limits::Limits;

    fn problems(text: &str) -> Vec<Problem> {
        parse(text, Path::new("/etc/pganalytics/config.toml"))
            .unwrap_err()
            .problems
    }

    #[test]
    fn the_sample_config_loads_with_no_unknown_keys() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.toml.sample");
        let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(config.plugins.contains_key("sysstat"));
        assert!(config.plugins.contains_key("disk"));
        assert!(config.backend.is_some() && config.postgres.contains_key("default"));
    }

    #[test]
    fn a_minimal_plugin_gets_defaults_and_relative_paths_resolve_to_the_config_dir() {
        let config = parse(
            "[plugins.x]\nwasm = \"x.wasm\"\nemits = [\"x\"]\n",
            Path::new("/etc/pganalytics/config.toml"),
        )
        .unwrap();
        let x = &config.plugins["x"];
        assert_eq!(x.wasm, Path::new("/etc/pganalytics/x.wasm"));
        assert_eq!(x.limits, Limits::default());
        assert_eq!(x.interval, DEFAULT_INTERVAL);
        assert!(x.enabled && x.grants.procfs.is_none());
    }

    #[test]
    fn a_plain_http_backend_is_refused_unless_allowed_and_other_schemes_always() {
        for url in [
            "http://backend.example",
            "HTTP://backend.example",
            "ftp://b",
            "backend.example",
        ] {
            let text = format!("[collector]\nid = \"c\"\n\n[backend]\nurl = {url:?}\n");
            let found = problems(&text);
            assert_eq!(found.len(), 1, "{url}: {found:#?}");
            let rendered = found[0].to_string();
            assert!(
                rendered.starts_with("/etc/pganalytics/config.toml:5: `backend.url`"),
                "{rendered}"
            );
        }
        let allowed = parse(
            "[backend]\nurl = \"http://backend.example\"\nallow_insecure_http = true\n",
            Path::new("/etc/pganalytics/config.toml"),
        )
        .unwrap();
        assert!(allowed.backend.unwrap().allow_insecure_http);
        // The switch does not open other schemes.
        assert_eq!(
            problems("[backend]\nurl = \"ftp://b\"\nallow_insecure_http = true\n").len(),
            1
        );
        assert_eq!(
            parse("[backend]\nurl = \"https://b\"\n", Path::new("/c.toml"))
                .unwrap()
                .backend
                .unwrap()
                .compression,
            Compression::Auto
        );
    }

    #[test]
    fn every_problem_is_reported_with_key_and_line() {
        let text = "\
[collector]
id = \"c1\"
colour = \"blue\"

[plugins.a]
wasm = \"a.wasm\"
emits = [\"a\"]
interval = \"10x\"

[plugins.b]
wasm = \"b.wasm\"
emits = [\"b\"]
memroy = \"1MiB\"
";
        let found = problems(text);
        assert_eq!(found.len(), 3, "{found:#?}");
        let rendered: Vec<String> = found.iter().map(|p| p.to_string()).collect();
        assert!(
            rendered[0].starts_with("/etc/pganalytics/config.toml:3: `collector.colour`"),
            "{rendered:?}"
        );
        assert!(
            rendered
                .iter()
                .any(|p| p.contains(":8: `plugins.a.interval`") && p.contains("10x")),
            "{rendered:?}"
        );
        assert!(
            rendered
                .iter()
                .any(|p| p.contains(":13: `plugins.b.memroy`") && p.contains("unknown field")),
            "{rendered:?}"
        );
    }

    #[test]
    fn limits_out_of_range_are_named() {
        let text = "\
[plugins.a]
wasm = \"a.wasm\"
emits = [\"a\"]
memory = \"64KiB\"
max_state_bytes = \"17MiB\"
fuel = 0
";
        let rendered: Vec<String> = problems(text).iter().map(|p| p.to_string()).collect();
        assert_eq!(rendered.len(), 3, "{rendered:#?}");
        for (key, says) in [
            ("plugins.a.memory", "at least 1MiB"),
            ("plugins.a.max_state_bytes", "at most 16 MiB"),
            ("plugins.a.fuel", "above zero"),
        ] {
            assert!(
                rendered.iter().any(|p| p.contains(key) && p.contains(says)),
                "{key}: {rendered:#?}"
            );
        }
        let at_ceiling = text
            .replace("memory = \"64KiB\"\n", "")
            .replace("fuel = 0\n", "")
            .replace("17MiB", "16MiB");
        parse(&at_ceiling, Path::new("/etc/pganalytics/config.toml"))
            .unwrap_or_else(|e| panic!("16MiB is allowed: {e}"));
    }

    #[test]
    fn bad_grants_digests_and_sections_are_named() {
        let text = "\
[metrics]
x = 1
[plugins.a]
wasm = \"a.wasm\"
emits = []
sha256 = \"abc\"
[plugins.a.grants.procfs]
paths = [\"../etc/passwd\"]
[plugins.a.grants.postgres]
databases = []
";
        let rendered: Vec<String> = problems(text).iter().map(|p| p.to_string()).collect();
        let expect = [
            "`metrics`",
            "`plugins.a.sha256`",
            "`plugins.a.emits`",
            "`plugins.a.grants.procfs.paths`",
            "`plugins.a.grants.postgres.databases`",
        ];
        for key in expect {
            assert!(
                rendered.iter().any(|p| p.contains(key)),
                "missing {key} in {rendered:#?}"
            );
        }
    }

    #[test]
    fn grants_name_servers_the_config_defines() {
        let plugin = |name: &str, server: Option<&str>| {
            let server = server.map_or(String::new(), |s| format!("server = \"{s}\"\n"));
            format!(
                "[plugins.{name}]\nwasm = \"{name}.wasm\"\nemits = [\"x\"]\n\
                 [plugins.{name}.grants.postgres]\ndatabases = [\"*\"]\n{server}"
            )
        };
        let path = Path::new("/etc/pganalytics/config.toml");
        let two = format!(
            "[postgres]\nhost = \"/run/a\"\n[postgres.servers.b]\nhost = \"/run/b\"\n{}{}",
            plugin("pa", None),
            plugin("pb", Some("b"))
        );
        let config = parse(&two, path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.postgres.keys().collect::<Vec<_>>(), ["b", "default"]);
        assert_eq!(config.postgres["b"].host, "/run/b");
        let grant = |p: &str| config.plugins[p].grants.postgres.clone().unwrap();
        assert_eq!(grant("pa").server(), "default");
        assert_eq!(grant("pb").server(), "b");
        let setup = config.host_setup();
        assert_eq!(setup.capabilities.postgres.len(), 2);

        let missing =
            |text: &str| -> Vec<String> { problems(text).iter().map(|p| p.to_string()).collect() };
        // A named server that does not exist.
        let rendered = missing(&format!(
            "[postgres]\nhost = \"/run/a\"\n{}",
            plugin("pc", Some("c"))
        ));
        assert_eq!(rendered.len(), 1, "{rendered:#?}");
        assert!(
            rendered[0].contains("`plugins.pc.grants.postgres.server`")
                && rendered[0].contains("no PostgreSQL server `c` (configured: default)"),
            "{rendered:#?}"
        );
        // The implicit `default` when only named servers exist.
        let rendered = missing(&format!(
            "[postgres.servers.b]\nport = 1\n{}",
            plugin("pa", None)
        ));
        assert!(
            rendered[0].contains("`plugins.pa.grants.postgres.server`")
                && rendered[0].contains("`default` (configured: b)"),
            "{rendered:#?}"
        );
        // A named server with no `[postgres]` at all.
        let rendered = missing(&plugin("pb", Some("b")));
        assert!(
            rendered[0].contains("has no `[postgres]` section"),
            "{rendered:#?}"
        );
        // No `[postgres]` and no server named: as before, the calls fail at run time.
        assert!(parse(&plugin("pa", None), path).is_ok());
        // A bad `[postgres]` is reported once, at its own key, not again at each grant.
        let rendered = missing(&format!(
            "[postgres.servers.B]\nport = 1\n{}",
            plugin("pb", Some("b"))
        ));
        assert_eq!(rendered.len(), 1, "{rendered:#?}");
        assert!(
            rendered[0].contains("`postgres.servers.B`"),
            "{rendered:#?}"
        );
    }

    #[test]
    fn trust_keys_are_read_and_signed_by_names_only_known_keys() {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::plugin::signature::SecretKey::generate("release").unwrap();
        std::fs::write(dir.path().join("release.pub"), key.public().to_file_text()).unwrap();
        std::fs::write(dir.path().join("other.pub"), key.public().to_file_text()).unwrap();
        let path = dir.path().join("config.toml");
        let text = "\
[collector]
state_dir = \"state\"
[trust.keys]
release = \"release.pub\"
[plugins.a]
wasm = \"a.wasm\"
emits = [\"a\"]
signed_by = [\"release\"]
";
        let config = parse(text, &path).unwrap();
        assert_eq!(
            config.plugins["a"].signed_by,
            vec![config.trust.keys["release"].clone()]
        );
        assert_eq!(config.trust.keys["release"].key, key.public().key);
        assert_eq!(
            config.collector.cache_dir,
            Some(dir.path().join("state").join("cache"))
        );

        let text = "\
[trust]
keys = { release = \"release.pub\", renamed = \"other.pub\", gone = \"missing.pub\" }
[plugins.a]
wasm = \"a.wasm\"
emits = [\"a\"]
signed_by = [
  \"release\",
  \"typo\",
]
";
        let rendered: Vec<String> = parse(text, &path)
            .unwrap_err()
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(rendered.len(), 3, "{rendered:#?}");
        let file = path.display().to_string();
        assert!(
            rendered.contains(&format!(
                "{file}:8: `plugins.a.signed_by`: no key `typo` in `[trust.keys]` (known: release)"
            )),
            "{rendered:#?}"
        );
        assert!(
            rendered.iter().any(
                |p| p.starts_with(&format!("{file}:2: `trust.keys.renamed`"))
                    && p.contains("names must match")
            ),
            "{rendered:#?}"
        );
        assert!(
            rendered
                .iter()
                .any(|p| p.starts_with(&format!("{file}:2: `trust.keys.gone`"))
                    && p.contains("cannot read")),
            "{rendered:#?}"
        );
    }

    #[test]
    fn dead_letter_bounds_are_read_and_default_to_the_spools() {
        let path = Path::new("/etc/pganalytics/config.toml");
        let config = parse("", path).unwrap();
        assert_eq!(config.buffer.dead_letter_max_bytes, None);
        assert_eq!(config.buffer.dead_letter_max_age, None);
        let config = parse(
            "[buffer]\ndead_letter_max_bytes = \"1MiB\"\ndead_letter_max_age = \"2h\"\n",
            path,
        )
        .unwrap();
        assert_eq!(config.buffer.dead_letter_max_bytes, Some(1 << 20));
        assert_eq!(
            config.buffer.dead_letter_max_age,
            Some(std::time::Duration::from_secs(7200))
        );
        let found = problems("[buffer]\ndead_letter_max_age = \"soon\"\n");
        assert!(
            found[0]
                .to_string()
                .contains("`buffer.dead_letter_max_age`"),
            "{found:?}"
        );
    }

    #[test]
    fn there_is_no_cache_without_a_state_dir_unless_one_is_set() {
        let path = Path::new("/etc/pganalytics/config.toml");
        let config = parse("", path).unwrap();
        assert_eq!(config.collector.cache_dir, None);
        let config = parse("[collector]\ncache_dir = \"c\"\n", path).unwrap();
        assert_eq!(
            config.collector.cache_dir,
            Some(PathBuf::from("/etc/pganalytics/c"))
        );
    }

    #[test]
    fn syntax_errors_carry_a_line() {
        let found = problems("[plugins.a\nwasm = 1\n");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].line, Some(1));
        assert!(found[0].message.contains("not valid TOML"));
    }
}
