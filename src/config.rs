//! Settings: defaults, then an optional TOML file, then `STATUSPULSE_*` environment
//! variables. A bad value is reported as one line naming the variable (or file key).

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::http::answer_deadline::NEXT_ANSWER_WITHIN;
use crate::store::deadline::Deadlines;

/// Everything the server and the workers are configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `postgres://…`; `None` selects the embedded SQLite database in `data_dir`.
    pub database_url: Option<SecretString>,
    /// `amqp://…`; `None` selects the in-process job queue.
    pub amqp_url: Option<SecretString>,
    pub data_dir: PathBuf,
    pub public_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// `None`: generated on first start and stored (hashed) in `data_dir`.
    pub admin_token: Option<SecretString>,
    pub issuer: String,
    pub log_format: LogFormat,
    /// HTTP worker threads per listener; `None` means one per core.
    pub http_workers: Option<usize>,
    /// 64 hex characters; `None`: generated on first start in `data_dir`. Every server
    /// sharing one database must share this key.
    pub hashing_key: Option<SecretString>,
    pub database_max_connections: usize,
    /// How long after its last answer a connection may still be read. Not configurable
    /// from outside; tests shorten it.
    pub next_answer_within: Duration,
    /// How long PostgreSQL operations may take before they count as an outage. Not
    /// configurable from outside; tests shorten it.
    pub database_deadlines: Deadlines,
    /// Where the config file set a setting the environment did not (`--config FILE: line
    /// N (key)`), by key: a value that fails only when used is named where it was given.
    file_places: HashMap<&'static str, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A configuration problem, printed as `<VARIABLE>: <problem>`.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(variable: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            variable: variable.into(),
            problem: problem.into(),
        }
    }
}

/// The TOML file's shape: the same names as the variables, lower-case, without the prefix.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    database_url: Option<String>,
    amqp_url: Option<String>,
    data_dir: Option<String>,
    public_addr: Option<String>,
    admin_addr: Option<String>,
    admin_token: Option<String>,
    issuer: Option<String>,
    log_format: Option<String>,
    #[serde(default, deserialize_with = "number_or_text")]
    http_workers: Option<String>,
    hashing_key: Option<String>,
    #[serde(default, deserialize_with = "number_or_text")]
    database_max_connections: Option<String>,
}

/// A count in the file, written as TOML writes numbers (`http_workers = 4`) or as text
/// (`"4"`, as the environment gives it); checked like the variable's value afterwards.
fn number_or_text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a number")]
    enum Count {
        Number(i64),
        Text(String),
    }
    Ok(
        Option::<Count>::deserialize(deserializer)?.map(|count| match count {
            Count::Number(n) => n.to_string(),
            Count::Text(text) => text,
        }),
    )
}

const KEYS: [&str; 11] = [
    "database_url",
    "amqp_url",
    "data_dir",
    "public_addr",
    "admin_addr",
    "admin_token",
    "issuer",
    "log_format",
    "http_workers",
    "hashing_key",
    "database_max_connections",
];

/// Which store the settings select: PostgreSQL when `database_url` is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

impl StoreKind {
    /// For people: logs and messages.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "embedded SQLite",
            StoreKind::Postgres => "PostgreSQL",
        }
    }
}

impl Settings {
    pub fn store_kind(&self) -> StoreKind {
        if self.database_url.is_some() {
            StoreKind::Postgres
        } else {
            StoreKind::Sqlite
        }
    }

    /// Loads settings from `config_file` (if any) and the process environment.
    pub fn load(config_file: Option<&Path>) -> Result<Settings, ConfigError> {
        let env = statuspulse_variables(std::env::vars_os())?;
        Settings::from_sources(config_file, &env)
    }

    /// Loads settings from a file and an explicit environment map (tests pass their own).
    pub fn from_sources(
        config_file: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Settings, ConfigError> {
        let (file, file_text) = match config_file {
            Some(path) => read_file(path)?,
            None => (FileSettings::default(), String::new()),
        };
        let file_name = config_file.map(|path| format!("--config {}", path.display()));
        let file_values: HashMap<&str, Option<String>> = KEYS
            .iter()
            .zip([
                file.database_url,
                file.amqp_url,
                file.data_dir,
                file.public_addr,
                file.admin_addr,
                file.admin_token,
                file.issuer,
                file.log_format,
                file.http_workers,
                file.hashing_key,
                file.database_max_connections,
            ])
            .map(|(k, v)| (*k, v))
            .collect();
        // The environment wins over the file; an empty value, in either, counts as unset.
        let value = |key: &str| -> Option<(String, String)> {
            let variable = format!("STATUSPULSE_{}", key.to_ascii_uppercase());
            if let Some(v) = env.get(&variable).filter(|v| !v.is_empty()) {
                return Some((variable, v.clone()));
            }
            let v = file_values.get(key).cloned().flatten()?;
            let name = file_name.as_deref().unwrap_or("--config");
            (!v.is_empty()).then(|| (file_place(name, &file_text, key), v))
        };

        let file_places = KEYS
            .iter()
            .filter_map(|&key| {
                let (name, _) = value(key)?;
                (!name.starts_with("STATUSPULSE_")).then_some((key, name))
            })
            .collect();

        let database_url = value("database_url")
            .map(|(name, url)| {
                if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                    Ok(SecretString::from(url))
                } else {
                    Err(ConfigError::new(
                        name,
                        "must be a postgres:// or postgresql:// URL",
                    ))
                }
            })
            .transpose()?;
        let amqp_url = value("amqp_url")
            .map(|(name, url)| {
                if url.starts_with("amqp://") || url.starts_with("amqps://") {
                    Ok(SecretString::from(url))
                } else {
                    Err(ConfigError::new(name, "must be an amqp:// or amqps:// URL"))
                }
            })
            .transpose()?;
        let data_dir = value("data_dir")
            .map(|(_, v)| PathBuf::from(v))
            .unwrap_or_else(|| "./data".into());
        let public_addr = parse_addr(value("public_addr"), "127.0.0.1:8080")?;
        let admin_addr = parse_addr(value("admin_addr"), "127.0.0.1:8081")?;
        let admin_token = value("admin_token")
            .map(|(name, token)| {
                if token.chars().count() < 16 {
                    Err(ConfigError::new(name, "must be at least 16 characters"))
                } else if !is_presentable(&token) {
                    // A request could never present it: every admin request would get 401.
                    Err(ConfigError::new(
                        name,
                        "must not start or end with white space nor hold control characters \
                         (a line end left by a file?): no request could present it",
                    ))
                } else {
                    Ok(SecretString::from(token))
                }
            })
            .transpose()?;
        let issuer = match value("issuer") {
            Some((name, issuer)) => {
                if !(issuer.starts_with("http://") || issuer.starts_with("https://")) {
                    return Err(ConfigError::new(name, "must be an http:// or https:// URL"));
                }
                issuer.trim_end_matches('/').to_owned()
            }
            None => format!("http://{public_addr}"),
        };
        let log_format = match value("log_format") {
            None => LogFormat::Text,
            Some((_, v)) if v == "text" => LogFormat::Text,
            Some((_, v)) if v == "json" => LogFormat::Json,
            Some((name, _)) => return Err(ConfigError::new(name, "must be text or json")),
        };
        let http_workers = value("http_workers")
            .map(|(name, v)| parse_count(&name, &v, 1, 256))
            .transpose()?;
        let hashing_key = value("hashing_key")
            .map(|(name, v)| {
                if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(SecretString::from(v))
                } else {
                    Err(ConfigError::new(
                        name,
                        "must be 64 hexadecimal characters (32 bytes)",
                    ))
                }
            })
            .transpose()?;
        let database_max_connections = value("database_max_connections")
            .map(|(name, v)| parse_count(&name, &v, 1, 1_000))
            .transpose()?
            .unwrap_or(16);
        Ok(Settings {
            database_url,
            amqp_url,
            data_dir,
            public_addr,
            admin_addr,
            admin_token,
            issuer,
            log_format,
            http_workers,
            hashing_key,
            database_max_connections,
            next_answer_within: NEXT_ANSWER_WITHIN,
            database_deadlines: Deadlines::default(),
            file_places,
        })
    }

    /// The settings of a test server: ports chosen by the OS, a fresh data directory.
    pub fn for_tests(data_dir: PathBuf, admin_token: &str) -> Settings {
        Settings {
            database_url: None,
            amqp_url: None,
            data_dir,
            public_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_token: Some(SecretString::from(admin_token.to_owned())),
            issuer: "http://127.0.0.1".into(),
            log_format: LogFormat::Text,
            http_workers: Some(1),
            hashing_key: None,
            database_max_connections: 4,
            next_answer_within: NEXT_ANSWER_WITHIN,
            database_deadlines: Deadlines::default(),
            file_places: HashMap::new(),
        }
    }

    /// Where the setting `key` (as the config file spells it: `data_dir`) was given, for an
    /// error about its value: the file's line if the file set it, else its variable
    /// (`STATUSPULSE_DATA_DIR`), which is also what to set when the default does not work.
    pub fn place(&self, key: &str) -> String {
        match self.file_places.get(key) {
            Some(place) => place.clone(),
            None => format!("STATUSPULSE_{}", key.to_ascii_uppercase()),
        }
    }

    /// Where the store was chosen: the database URL, or the data dir of the embedded one.
    pub fn store_place(&self) -> String {
        self.place(if self.database_url.is_some() {
            "database_url"
        } else {
            "data_dir"
        })
    }

    /// The hashing key as bytes, when configured.
    pub fn hashing_key_bytes(&self) -> Option<[u8; 32]> {
        let hex = self.hashing_key.as_ref()?.expose_secret().to_owned();
        decode_hex_32(&hex)
    }
}

/// The `STATUSPULSE_*` variables of an environment. The others are not ours to read, and
/// may hold any bytes (`std::env::vars` panics on one that is not UTF-8); one of ours that
/// is not UTF-8 is an error naming it.
fn statuspulse_variables(
    variables: impl Iterator<Item = (OsString, OsString)>,
) -> Result<HashMap<String, String>, ConfigError> {
    let mut ours = HashMap::new();
    for (name, value) in variables {
        let Some(name) = name
            .to_str()
            .filter(|name| name.starts_with("STATUSPULSE_"))
        else {
            continue;
        };
        let value = value
            .into_string()
            .map_err(|_| ConfigError::new(name, "is not valid UTF-8"))?;
        ours.insert(name.to_owned(), value);
    }
    Ok(ours)
}

/// Decodes 64 hex characters.
pub fn decode_hex_32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// The file's settings, and its text (to say where a value that does not work was set).
fn read_file(path: &Path) -> Result<(FileSettings, String), ConfigError> {
    let name = format!("--config {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(&name, e.to_string()))?;
    let settings = toml::from_str(&text).map_err(|error| file_error(name, &text, &error))?;
    Ok((settings, text))
}

/// Where the file sets `key`, as a refusal of its value names it:
/// `--config FILE: line N (key)`.
fn file_place(name: &str, text: &str, key: &str) -> String {
    match text.lines().position(|line| key_of_line(line) == Some(key)) {
        Some(index) => format!("{name}: line {} ({key})", index + 1),
        None => format!("{name} ({key})"),
    }
}

/// A problem in the file, on one line: where it is (line, column and key, when the parser
/// points at one) and what it is. The parser's own rendering spans several lines.
fn file_error(name: String, text: &str, error: &toml::de::Error) -> ConfigError {
    let problem = without_quoted_value(&error.message().trim().replace('\n', " "));
    let Some(span) = error.span() else {
        return ConfigError::new(name, problem);
    };
    let before = &text[..span.start.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    let place = match text[line_start..].lines().next().and_then(key_of_line) {
        Some(key) => format!("line {line}, column {column} ({key})"),
        None => format!("line {line}, column {column}"),
    };
    ConfigError::new(name, format!("{place}: {problem}"))
}

/// serde's message for a value of the wrong type or shape quotes the value (``invalid
/// type: integer `123`, expected a string``); the value may be a secret, so it is left out.
/// Other messages quote key names, which stay.
fn without_quoted_value(problem: &str) -> String {
    if !(problem.starts_with("invalid type") || problem.starts_with("invalid value")) {
        return problem.to_owned();
    }
    let mut kept = String::with_capacity(problem.len());
    let mut rest = problem;
    while let Some(open) = rest.find('`') {
        kept.push_str(rest[..open].trim_end());
        match rest[open + 1..].find('`') {
            Some(close) => rest = &rest[open + 1 + close + 1..],
            None => return kept,
        }
    }
    kept.push_str(rest);
    kept
}

/// The known key a line of the file sets (`key = …`, `"key" = …`, `key.sub = …`,
/// `[key]`), if any.
fn key_of_line(line: &str) -> Option<&'static str> {
    let line = line.trim_start_matches('\u{feff}').trim();
    let key = match line.strip_prefix('[') {
        Some(table) => table.split(']').next()?,
        None => line.split('=').next()?,
    };
    let key = key
        .split('.')
        .next()?
        .trim()
        .trim_matches(|c| c == '"' || c == '\'');
    KEYS.iter().copied().find(|known| *known == key)
}

fn parse_addr(value: Option<(String, String)>, default: &str) -> Result<SocketAddr, ConfigError> {
    let Some((name, text)) = value else {
        return default
            .parse()
            .map_err(|_| ConfigError::new("default address", default));
    };
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    // A host name (`localhost:8080`): its first address, as a listener binds one.
    std::net::ToSocketAddrs::to_socket_addrs(text.as_str())
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            ConfigError::new(
                name,
                // Not quoted, as no value is: the same words serve every variable.
                "is not a socket address (for example 127.0.0.1:8080)",
            )
        })
}

/// Whether a bearer token can be sent as it is: HTTP drops white space around a header
/// value, and a field cannot carry control characters (a tab inside is allowed).
fn is_presentable(token: &str) -> bool {
    token.trim() == token && !token.chars().any(|c| c.is_control() && c != '\t')
}

fn parse_count(name: &str, text: &str, min: usize, max: usize) -> Result<usize, ConfigError> {
    match text.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError::new(
            name,
            format!("must be a whole number from {min} to {max}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_the_embedded_engine() {
        let settings = Settings::from_sources(None, &env(&[])).unwrap();
        assert!(settings.database_url.is_none());
        assert!(settings.amqp_url.is_none());
        assert_eq!(settings.public_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.admin_addr.to_string(), "127.0.0.1:8081");
        assert_eq!(settings.data_dir, PathBuf::from("./data"));
        assert_eq!(settings.issuer, "http://127.0.0.1:8080");
    }

    #[test]
    fn a_listener_address_may_name_a_host() {
        let settings =
            Settings::from_sources(None, &env(&[("STATUSPULSE_ADMIN_ADDR", "localhost:9101")]))
                .unwrap();
        assert!(
            settings.admin_addr.ip().is_loopback(),
            "{}",
            settings.admin_addr
        );
        assert_eq!(settings.admin_addr.port(), 9101);
    }

    #[test]
    fn bad_values_name_their_variable_without_echoing_secrets() {
        let err =
            Settings::from_sources(None, &env(&[("STATUSPULSE_PUBLIC_ADDR", "nope")])).unwrap_err();
        assert_eq!(err.variable, "STATUSPULSE_PUBLIC_ADDR");
        let err = Settings::from_sources(
            None,
            &env(&[("STATUSPULSE_DATABASE_URL", "mysql://u:hunter2@h/db")]),
        )
        .unwrap_err();
        assert_eq!(err.variable, "STATUSPULSE_DATABASE_URL");
        assert!(!err.to_string().contains("hunter2"));
        let err = Settings::from_sources(None, &env(&[("STATUSPULSE_ADMIN_TOKEN", "short")]))
            .unwrap_err();
        assert!(!err.to_string().contains("short\""));
        // A token that no request could present: around it, white space, which HTTP drops
        // (a line end kept from a secret's file); inside, a control character.
        for token in [
            "a-long-enough-token\n",
            " a-long-enough-token",
            "a-long-enough\u{7}-token",
        ] {
            let err = Settings::from_sources(None, &env(&[("STATUSPULSE_ADMIN_TOKEN", token)]))
                .unwrap_err();
            assert_eq!(err.variable, "STATUSPULSE_ADMIN_TOKEN");
            assert!(!err.to_string().contains("long-enough"), "{err}");
        }
        let inner_space = "a long enough token";
        assert!(
            Settings::from_sources(None, &env(&[("STATUSPULSE_ADMIN_TOKEN", inner_space)])).is_ok()
        );
        let err = Settings::from_sources(None, &env(&[("STATUSPULSE_PUBLIC_ADDR", "nope:x")]))
            .unwrap_err();
        assert!(!err.to_string().contains("nope"), "{err}");
        // Characters, not bytes: eight two-byte letters are eight characters.
        let err = Settings::from_sources(None, &env(&[("STATUSPULSE_ADMIN_TOKEN", "éééééééé")]))
            .unwrap_err();
        assert_eq!(err.variable, "STATUSPULSE_ADMIN_TOKEN");
    }

    #[test]
    fn config_file_rejects_unknown_keys_and_env_overrides_it() {
        let dir = std::env::temp_dir().join(format!("sp-config-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(
            &path,
            "public_addr = \"127.0.0.1:9000\"\nadmin_addr = \"127.0.0.1:9001\"\n",
        )
        .unwrap();
        let settings = Settings::from_sources(Some(&path), &env(&[])).unwrap();
        assert_eq!(settings.public_addr.port(), 9000);
        // A value that fails only when used (a taken port) is named where it was given.
        assert!(settings
            .place("public_addr")
            .ends_with("config.toml: line 1 (public_addr)"));
        assert_eq!(settings.place("data_dir"), "STATUSPULSE_DATA_DIR");
        let settings = Settings::from_sources(
            Some(&path),
            &env(&[("STATUSPULSE_PUBLIC_ADDR", "127.0.0.1:9100")]),
        )
        .unwrap();
        assert_eq!(settings.public_addr.port(), 9100);
        assert_eq!(settings.place("public_addr"), "STATUSPULSE_PUBLIC_ADDR");
        assert!(settings
            .place("admin_addr")
            .ends_with("config.toml: line 2 (admin_addr)"));
        // Counts as TOML numbers or as text; either is checked as the variable would be.
        std::fs::write(
            &path,
            "http_workers = 3\ndatabase_max_connections = \"7\"\n",
        )
        .unwrap();
        let settings = Settings::from_sources(Some(&path), &env(&[])).unwrap();
        assert_eq!(settings.http_workers, Some(3));
        assert_eq!(settings.database_max_connections, 7);
        std::fs::write(&path, "http_workers = 0\n").unwrap();
        assert!(Settings::from_sources(Some(&path), &env(&[])).is_err());
        std::fs::write(&path, "http_workers = true\n").unwrap();
        let err = Settings::from_sources(Some(&path), &env(&[])).unwrap_err();
        assert!(err.to_string().contains("a number"), "{err}");
        std::fs::write(&path, "publik_addr = \"127.0.0.1:9000\"\n").unwrap();
        let err = Settings::from_sources(Some(&path), &env(&[])).unwrap_err();
        assert!(err.to_string().contains("publik_addr"), "{err}");
    }

    #[test]
    fn config_file_errors_are_one_line_that_says_where() {
        let dir = std::env::temp_dir().join(format!("sp-config-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        let error = |text: &str| {
            std::fs::write(&path, text).unwrap();
            let message = Settings::from_sources(Some(&path), &env(&[]))
                .unwrap_err()
                .to_string();
            assert!(!message.contains('\n'), "{message}");
            message
        };
        let message = error("data_dir = \"x\"\npublic_addr = 19504\n");
        assert!(
            message.contains("line 2, column 15 (public_addr): invalid type"),
            "{message}"
        );
        let message = error("data_dir = \"x\"\ndata_dir = \"y\"\n");
        assert!(message.contains("line 2"), "{message}");
        assert!(message.contains("duplicate key"), "{message}");
        let message = error("data_dir\n");
        assert!(message.contains("line 1"), "{message}");
        // A value of the wrong type is not quoted back: it may be a secret.
        for text in [
            "admin_token = 123456789012345678\n",
            "\"admin_token\" = 123456789012345678\n",
            "\u{feff}'admin_token' = 123456789012345678\n",
        ] {
            let message = error(text);
            assert!(
                message.contains("(admin_token): invalid type: integer, expected a string"),
                "{message}"
            );
            assert!(!message.contains("123456789"), "{message}");
        }
        let message = error("\"\\u0061dmin_token\" = 123456789012345678\n");
        assert!(!message.contains("123456789"), "{message}");
        let message = error("[admin_token]\nx = 1\n");
        assert!(message.contains("(admin_token)"), "{message}");
        // A value of the right type that does not work names its line too.
        let message = error("data_dir = \"x\"\n\nhttp_workers = \"two\"\n");
        assert!(
            message.contains("config.toml: line 3 (http_workers): must be"),
            "{message}"
        );
        let message = error("# settings\nadmin_token = \"short-s3cret\"\n");
        assert!(
            message.contains("config.toml: line 2 (admin_token): must be at least 16 characters"),
            "{message}"
        );
        assert!(!message.contains("s3cret"), "{message}");
        // An empty value is unset, as in the environment.
        std::fs::write(&path, "data_dir = \"\"\n").unwrap();
        let settings = Settings::from_sources(Some(&path), &env(&[])).unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("./data"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn only_our_variables_are_read_and_they_must_be_utf8() {
        use std::os::unix::ffi::OsStringExt;
        let bytes = |b: &[u8]| OsString::from_vec(b.to_vec());
        let ours = statuspulse_variables(
            vec![
                (bytes(b"OTHER"), bytes(b"\xff")),
                (bytes(b"\xff"), bytes(b"x")),
                (bytes(b"STATUSPULSE_DATA_DIR"), bytes(b"/tmp/x")),
            ]
            .into_iter(),
        )
        .unwrap();
        assert_eq!(ours, env(&[("STATUSPULSE_DATA_DIR", "/tmp/x")]));
        let error = statuspulse_variables(
            vec![(bytes(b"STATUSPULSE_PUBLIC_ADDR"), bytes(b"\xff"))].into_iter(),
        )
        .unwrap_err();
        assert_eq!(error.variable, "STATUSPULSE_PUBLIC_ADDR");
    }
}
