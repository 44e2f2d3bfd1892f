//! Command line and config file (spec section 5).
//!
//! Flags use Go's syntax (`-flag`, `--flag`, `=value` or ` value`; booleans
//! take a value only with `=`). A TOML file given with `--config` uses the
//! flag names with `_` for `-`; a flag given on the command line wins over
//! the file, the file over the default. clap does the parsing and the
//! `--help` text; Go's single-dash long flags are rewritten to double-dash
//! before clap sees them, and clap's multi-line errors are reduced to the
//! one line Go's `flag` package would print.

mod access;
mod duration;
mod etcd;
mod tls;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};

pub use duration::{format_go_duration, parse_go_duration};
pub use etcd::EtcdOptions;
pub use tls::{ClientAuth, MinVersion, TlsOptions};

use crate::access::AccessOptions;
use crate::access::auth::AuthMethod;
use crate::allow::AllowList;
use crate::http::HttpLimits;
use crate::registry::{Caps, Compression};
use crate::tcp::TcpLimits;

/// Log verbosity, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

impl std::str::FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            "fatal" => LogLevel::Fatal,
            _ => {
                return Err(format!(
                    "invalid log level {s:?} (debug, info, warn, error, fatal)"
                ));
            }
        })
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// The original's `PREFIX DATE TIME LEVEL: message`.
    Text,
    /// One JSON object per line.
    Json,
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("invalid log format {s:?} (text, json)")),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_go_duration(s)
}

fn parse_log_level(s: &str) -> Result<LogLevel, String> {
    s.parse()
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("invalid boolean {s:?}")),
    }
}

fn parse_header_size(s: &str) -> Result<usize, String> {
    match parse_size(s)? {
        n if n < 8192 => Err("must be at least 8192".into()),
        n => Ok(n),
    }
}

/// A path; empty is accepted here and means "not given".
fn parse_path(s: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(s))
}

fn parse_allow(s: &str) -> Result<AllowList, String> {
    AllowList::parse(s)
}

fn parse_gzip_level(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n @ 1..=9) => Ok(n),
        _ => Err(format!("invalid gzip level {s:?} (1 to 9)")),
    }
}

fn parse_size(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("invalid size {s:?} (a number of bytes)")),
    }
}

/// A rate, 0 meaning no limit.
fn parse_rate(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .map_err(|_| format!("invalid rate {s:?} (a number a second, 0 = no limit)"))
}

/// The command line as clap sees it.
#[derive(Parser, Debug)]
#[command(
    name = "nsqlookupd",
    about = "NSQ's discovery daemon: nsqd nodes register over TCP, consumers look them up over HTTP.",
    disable_version_flag = true,
    args_override_self = true,
    max_term_width = 100
)]
struct Cli {
    /// <addr>:<port> to listen on for TCP clients (nsqd)
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "0.0.0.0:4160",
        help_heading = "Listeners"
    )]
    tcp_address: String,

    /// <addr>:<port> to listen on for HTTP clients (consumers, nsqadmin); empty = off (needs HTTPS)
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "0.0.0.0:4161",
        help_heading = "Listeners"
    )]
    http_address: String,

    /// address of this lookupd node, returned to nsqd by IDENTIFY [default: the OS hostname]
    #[arg(long, value_name = "ADDR", help_heading = "Listeners")]
    broadcast_address: Option<String>,

    /// duration of time a producer will remain in the active list since its last ping
    #[arg(long, value_name = "DURATION", default_value = "5m0s", value_parser = parse_duration,
        help_heading = "Registry timings")]
    inactive_producer_timeout: Duration,

    /// duration of time a producer will remain tombstoned if registration remains
    #[arg(long, value_name = "DURATION", default_value = "45s", value_parser = parse_duration,
        help_heading = "Registry timings")]
    tombstone_lifetime: Duration,

    /// longest accepted TCP command line in bytes; longer is a fatal E_INVALID
    #[arg(long, value_name = "BYTES", default_value = "4096", value_parser = parse_size,
        help_heading = "Limits")]
    max_command_size: usize,

    /// largest accepted IDENTIFY body in bytes; larger (or negative) is a fatal E_BAD_BODY
    #[arg(long, value_name = "BYTES", default_value = "65536", value_parser = parse_size,
        help_heading = "Limits")]
    max_identify_body_size: usize,

    /// most keys one TCP connection may register in; more is a fatal E_INVALID
    #[arg(long, value_name = "N", default_value = "100000", value_parser = parse_size,
        help_heading = "Limits")]
    max_registrations_per_connection: usize,

    /// most (key, producer) registrations held in all; a REGISTER beyond is refused (E_REGISTRATION_LIMIT, not fatal)
    #[arg(long, value_name = "N", default_value = "50000000", value_parser = parse_size,
        help_heading = "Limits")]
    max_registrations: usize,

    /// most topic and channel keys held; a REGISTER or /topic|channel/create needing more is refused
    #[arg(long, value_name = "N", default_value = "2000000", value_parser = parse_size,
        help_heading = "Limits")]
    max_keys: usize,

    /// close a TCP connection that sends nothing (not even PING) for this long, 0 = never; nsqd PINGs every 15s
    #[arg(long, value_name = "DURATION", default_value = "1m0s", value_parser = parse_duration,
        help_heading = "Limits")]
    tcp_idle_timeout: Duration,

    /// most simultaneous TCP connections; more are closed at accept
    #[arg(long, value_name = "N", default_value = "10000", value_parser = parse_size,
        help_heading = "Limits")]
    max_tcp_connections: usize,

    /// most simultaneous HTTP connections; more are closed at accept
    #[arg(long, value_name = "N", default_value = "10000", value_parser = parse_size,
        help_heading = "Limits")]
    max_http_connections: usize,

    /// most new HTTP and HTTPS connections accepted per second, together; more wait in the kernel's backlog (a burst of connections then cannot starve the open ones); 0 = no limit
    #[arg(long, value_name = "N", default_value = "0", value_parser = parse_rate,
        help_heading = "Limits")]
    max_http_accept_rate: usize,

    /// time allowed to send an HTTP request head; also closes idle keep-alive connections
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration,
        help_heading = "Limits")]
    http_header_timeout: Duration,

    /// largest HTTP request head (request line + headers) in bytes, at least 8192; larger gets 431
    #[arg(long, value_name = "BYTES", default_value = "65536", value_parser = parse_header_size,
        help_heading = "Limits")]
    http_max_header_size: usize,

    /// largest HTTP request body in bytes (bodies are ignored); larger gets 400 INVALID_REQUEST
    #[arg(long, value_name = "BYTES", default_value = "1048576", value_parser = parse_size,
        help_heading = "Limits")]
    http_max_body_size: usize,

    /// only these peers may connect to the TCP port (nsqd): CIDR[,CIDR...], IPv4 and IPv6; others are closed at accept [default: everyone]
    #[arg(long, value_name = "CIDRS", value_parser = parse_allow, help_heading = "Access")]
    tcp_allow: Option<AllowList>,

    /// peers that may read (/lookup, /topics, /channels, /nodes, /info, /debug) without credentials: CIDR[,CIDR...]; closes the read endpoints to everyone else [default: everyone, unless --auth-http-address]
    #[arg(long, value_name = "CIDRS", value_parser = parse_allow, help_heading = "Access")]
    read_allow: Option<AllowList>,

    /// peers that may administer (POST /topic/*, /channel/*) without credentials: CIDR[,CIDR...]; closes them to everyone else [default: everyone, unless --admin-token-file or --admin-cn]
    #[arg(long, value_name = "CIDRS", value_parser = parse_allow, help_heading = "Access")]
    admin_allow: Option<AllowList>,

    /// peers that may read /metrics without credentials: CIDR[,CIDR...]; closes it to everyone else but admins [default: everyone]
    #[arg(long, value_name = "CIDRS", value_parser = parse_allow, help_heading = "Access")]
    metrics_allow: Option<AllowList>,

    /// file holding the admin token (sent as `Authorization: Bearer <token>`), read at start; closes the admin endpoints to everyone else [default: none]
    #[arg(long, value_name = "FILE", value_parser = parse_path, help_heading = "Access")]
    admin_token_file: Option<PathBuf>,

    /// common names of verified client certificates (HTTPS, --tls-root-ca-file) that may administer: CN[,CN...] [default: none]
    #[arg(long, value_name = "CNS", value_parser = access::parse_common_names, help_heading = "Access")]
    admin_cn: Option<access::CommonNames>,

    /// nsqd-style auth server(s) asked whether a consumer's Bearer secret may read: host:port or URL, comma separated or repeated; closes the read endpoints to consumers without a granted secret [default: none]
    #[arg(long, value_name = "ADDR", action = clap::ArgAction::Append, help_heading = "Access")]
    auth_http_address: Vec<String>,

    /// HTTP method of auth server queries: get or post (nsqd's)
    #[arg(long, value_name = "METHOD", default_value = "get", value_parser = access::parse_method,
        help_heading = "Access")]
    auth_http_request_method: AuthMethod,

    /// timeout of a connection to the auth server
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration,
        help_heading = "Access")]
    http_client_connect_timeout: Duration,

    /// timeout of one auth server query, connect to answer
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration,
        help_heading = "Access")]
    http_client_request_timeout: Duration,

    /// most auth server answers cached (each for its ttl)
    #[arg(long, value_name = "N", default_value = "10000", value_parser = parse_size,
        help_heading = "Access")]
    auth_cache_size: usize,

    /// how long a refused secret is remembered, so forged secrets cannot flood the auth server; 0 = not at all
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration,
        help_heading = "Access")]
    auth_denied_ttl: Duration,

    /// most auth server queries at once; beyond, a request needing one gets 503 AUTH_UNAVAILABLE
    #[arg(long, value_name = "N", default_value = "64", value_parser = parse_size,
        help_heading = "Access")]
    auth_max_inflight: usize,

    /// gzip-compress answers for clients that accept it (Accept-Encoding: gzip); false: every answer plain, as the original
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
        default_value = "true", default_missing_value = "true", value_parser = parse_bool,
        help_heading = "Compression")]
    http_compression: bool,

    /// gzip level, 1 (fastest) to 9 (smallest)
    #[arg(long, value_name = "LEVEL", default_value = "1", value_parser = parse_gzip_level,
        help_heading = "Compression")]
    http_gzip_level: u32,

    /// answers shorter than this many bytes stay plain even for gzip clients
    #[arg(long, value_name = "BYTES", default_value = "1024", value_parser = parse_size,
        help_heading = "Compression")]
    http_compression_min_size: usize,

    /// memory for cached /lookup, /topics and /nodes answers, bytes; answers beyond it are rendered per request
    #[arg(long, value_name = "BYTES", default_value = "1073741824", value_parser = parse_size,
        help_heading = "Limits")]
    lookup_cache_size: usize,

    /// set log verbosity: debug, info, warn, error, or fatal
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = parse_log_level,
        help_heading = "Logging")]
    log_level: LogLevel,

    /// log line format: text (the original's) or json (one object per line)
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = parse_log_format,
        help_heading = "Logging")]
    log_format: LogFormat,

    /// log message prefix
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "[nsqlookupd] ",
        allow_hyphen_values = true,
        help_heading = "Logging"
    )]
    log_prefix: String,

    /// [deprecated] has no effect, use --log-level
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
        default_value = "false", default_missing_value = "true", value_parser = parse_bool,
        help_heading = "Logging")]
    verbose: bool,

    /// etcd client URLs (http:// or https://, with host and port), comma separated; turns cluster mode on [default: none, standalone]
    #[arg(long, value_name = "URL[,URL...]", value_parser = etcd::parse_endpoints,
        help_heading = "Cluster (etcd)")]
    etcd_endpoints: Option<etcd::Endpoints>,

    /// prefix of every etcd key of this cluster
    #[arg(long, value_name = "PREFIX", default_value = "/nsqlookupd", value_parser = etcd::parse_prefix,
        help_heading = "Cluster (etcd)")]
    etcd_prefix: String,

    /// etcd lease TTL: how long a dead replica's registrations stay visible on the others; must exceed the time nsqd takes to re-register with a surviving replica (two 15s ping intervals)
    #[arg(long, value_name = "DURATION", default_value = "1m0s", value_parser = etcd::parse_lease_ttl,
        help_heading = "Cluster (etcd)")]
    etcd_lease_ttl: Duration,

    /// most operations in one etcd transaction; not above the etcd server's max-txn-ops
    #[arg(long, value_name = "N", default_value = "128", value_parser = etcd::parse_max_txn_ops,
        help_heading = "Cluster (etcd)")]
    etcd_max_txn_ops: usize,

    /// etcd user (needs --etcd-password-file) [default: none]
    #[arg(long, value_name = "USER", help_heading = "Cluster (etcd)")]
    etcd_username: Option<String>,

    /// file holding the etcd user's password, read at start [default: none]
    #[arg(long, value_name = "FILE", value_parser = parse_path, help_heading = "Cluster (etcd)")]
    etcd_password_file: Option<PathBuf>,

    /// CA certificate (PEM) to verify etcd with; turns TLS on [default: none]
    #[arg(long, value_name = "FILE", value_parser = parse_path, help_heading = "Cluster (etcd)")]
    etcd_cacert: Option<PathBuf>,

    /// client certificate (PEM) for etcd (needs --etcd-key) [default: none]
    #[arg(long, value_name = "FILE", value_parser = parse_path, help_heading = "Cluster (etcd)")]
    etcd_cert: Option<PathBuf>,

    /// private key (PEM) of --etcd-cert [default: none]
    #[arg(long, value_name = "FILE", value_parser = parse_path, help_heading = "Cluster (etcd)")]
    etcd_key: Option<PathBuf>,

    #[command(flatten)]
    tls: tls::TlsArgs,

    /// path to a TOML config file (keys are flag names with _ for -)
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// print version string and exit
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_value = "false",
        default_missing_value = "true", value_parser = parse_bool, hide_default_value = true)]
    version: bool,
}

/// Every setting, resolved from defaults, the config file and the flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub tcp_address: String,
    pub http_address: String,
    pub broadcast_address: String,
    pub inactive_producer_timeout: Duration,
    pub tombstone_lifetime: Duration,
    pub log_level: LogLevel,
    pub log_prefix: String,
    pub log_format: LogFormat,
    pub lookup_cache_size: usize,
    /// `--max-registrations`, `--max-keys`.
    pub caps: Caps,
    /// `--tcp-allow`: None lets everyone connect.
    pub tcp_allow: Option<AllowList>,
    pub tcp_limits: TcpLimits,
    pub http_limits: HttpLimits,
    /// Cluster mode; `None` = standalone.
    pub etcd: Option<EtcdOptions>,
    /// Who may read and administer over HTTP; the default leaves all open.
    pub access: AccessOptions,
    /// gzip answers for clients that accept them.
    pub compression: Compression,
    /// HTTPS on the HTTP API; `None` = none (`http_address` is then not empty).
    pub tls: Option<TlsOptions>,
}

impl Default for Options {
    /// The defaults, with the OS hostname as broadcast address.
    fn default() -> Self {
        match parse_args(["nsqlookupd"]) {
            Ok(Parsed::Run { options, .. }) => *options,
            _ => unreachable!("no arguments always parse"),
        }
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    /// Run the server. `warnings` are things to log once logging is up.
    Run {
        options: Box<Options>,
        warnings: Vec<String>,
    },
    /// Print this (help) and exit 0.
    Help(String),
    /// Print this (version) and exit 0.
    Version(String),
}

/// A bad flag, value or config file: one line, exit status 2.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `--version` line.
/// `--version`: the NSQ release spoken (what clients compare), then this
/// build: crate version, the exact commit, and `-dirty` when the work tree
/// differed from it.
pub fn version_string() -> String {
    let dirty = match crate::metrics::GIT_DIRTY {
        "true" => "-dirty",
        "false" => "",
        _ => " (dirty: unknown)",
    };
    format!(
        "nsqlookupd v{} (nsqlookupd-rs {}, commit {}{dirty}, built w/ rustc)",
        crate::NSQ_VERSION,
        env!("CARGO_PKG_VERSION"),
        crate::metrics::GIT_COMMIT,
    )
}

/// Flags that take a value as the next argument (all but the booleans).
fn takes_separate_value(flag: &str) -> bool {
    !matches!(
        flag,
        "version" | "verbose" | "tls-required" | "http-compression" | "help" | "h"
    )
}

/// Rewrites Go's `-flag` to `--flag`, leaving values alone.
fn go_style_args(args: Vec<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut expecting_value = false;
    for (i, arg) in args.into_iter().enumerate() {
        if i == 0 || expecting_value {
            expecting_value = false;
            out.push(arg);
            continue;
        }
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        let long = if let Some(rest) = s.strip_prefix("--") {
            rest
        } else if let Some(rest) = s.strip_prefix('-').filter(|r| r.len() > 1) {
            rest
        } else {
            out.push(arg);
            continue;
        };
        if long.is_empty() {
            out.push(arg);
            continue;
        }
        let (name, has_value) = match long.split_once('=') {
            Some((name, _)) => (name, true),
            None => (long, false),
        };
        expecting_value = !has_value && takes_separate_value(name);
        out.push(OsString::from(format!("--{long}")));
    }
    out
}

fn context_str(err: &clap::Error, kind: ContextKind) -> Option<String> {
    match err.get(kind)? {
        ContextValue::String(s) => Some(s.clone()),
        ContextValue::Strings(v) => v.first().cloned(),
        _ => None,
    }
}

/// Reduces a clap error to one line naming the flag.
fn one_line(err: &clap::Error) -> String {
    let arg = context_str(err, ContextKind::InvalidArg).unwrap_or_default();
    let flag = arg.split_whitespace().next().unwrap_or("").to_owned();
    match err.kind() {
        ErrorKind::UnknownArgument if !flag.starts_with('-') => {
            format!("unexpected argument {flag:?}: nsqlookupd takes only flags")
        }
        ErrorKind::UnknownArgument => format!("flag provided but not defined: {flag}"),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
            if context_str(err, ContextKind::InvalidValue).is_none_or(|v| v.is_empty()) =>
        {
            format!("flag needs an argument: {flag}")
        }
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
            let value = context_str(err, ContextKind::InvalidValue).unwrap_or_default();
            let why = std::error::Error::source(err)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            format!("invalid value {value:?} for flag {flag}{why}")
        }
        ErrorKind::NoEquals | ErrorKind::TooFewValues | ErrorKind::WrongNumberOfValues => {
            format!("flag needs an argument: {flag}")
        }
        ErrorKind::ArgumentConflict => format!("flag given twice: {flag}"),
        _ => err
            .to_string()
            .lines()
            .next()
            .unwrap_or("invalid arguments")
            .trim_start_matches("error: ")
            .to_owned(),
    }
}

/// Parses the command line (`args[0]` is the program name).
pub fn parse_args<I, T>(args: I) -> Result<Parsed, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args = go_style_args(args.into_iter().map(Into::into).collect());
    let command = Cli::command();
    let matches = match command.clone().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::DisplayHelp => {
            return Ok(Parsed::Help(e.render().to_string()));
        }
        Err(e) => return Err(ConfigError(one_line(&e))),
    };
    let cli = Cli::from_arg_matches(&matches).map_err(|e| ConfigError(one_line(&e)))?;
    if cli.version {
        return Ok(Parsed::Version(version_string()));
    }
    let mut warnings = Vec::new();
    let file = match &cli.config {
        Some(path) => Some(load_file(path, &mut warnings)?),
        None => None,
    };
    let options = resolve(cli, &matches, file.as_ref(), &mut warnings)?;
    Ok(Parsed::Run {
        options: Box::new(options),
        warnings,
    })
}

/// The config file's table, with unknown keys reported as warnings.
fn load_file(path: &PathBuf, warnings: &mut Vec<String>) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "failed to load config file {} - {e}",
            path.display()
        ))
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let msg = e.message().to_owned();
        ConfigError(format!(
            "failed to load config file {} - {msg}",
            path.display()
        ))
    })?;
    let known: Vec<String> = Cli::command()
        .get_arguments()
        .map(|a| a.get_id().as_str().to_owned())
        .collect();
    for key in table.keys() {
        if !known.contains(key) || key == "config" || key == "version" {
            warnings.push(format!(
                "config file {}: unknown option {key:?} ignored",
                path.display()
            ));
        }
    }
    Ok(table)
}

/// Config file keys that also take an array of strings, read as the
/// comma-separated list the flag takes.
const LIST_KEYS: &[&str] = &["etcd_endpoints", "auth_http_address"];

/// A value from the config file, converted with the flag's own parser.
fn file_value<T>(
    table: &toml::Table,
    key: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    let Some(value) = table.get(key) else {
        return Ok(None);
    };
    let text = match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(n)
            if key.ends_with("_timeout") || key.ends_with("_lifetime") || key.ends_with("_ttl") =>
        {
            // go-options reads a bare number for a duration as milliseconds.
            format!("{n}ms")
        }
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) if LIST_KEYS.contains(&key) => {
            let mut parts = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    toml::Value::String(s) => parts.push(s.as_str()),
                    other => {
                        return Err(ConfigError(format!(
                            "invalid value {other} in config option {key}: a string expected"
                        )));
                    }
                }
            }
            parts.join(",")
        }
        other => other.to_string(),
    };
    parse(&text).map(Some).map_err(|e| {
        ConfigError(format!(
            "invalid value {text:?} for config option {key}: {e}"
        ))
    })
}

fn resolve(
    cli: Cli,
    matches: &ArgMatches,
    file: Option<&toml::Table>,
    warnings: &mut Vec<String>,
) -> Result<Options, ConfigError> {
    let from_flag = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    macro_rules! pick {
        ($field:ident, $parse:expr) => {{
            let key = stringify!($field);
            match file {
                Some(table) if !from_flag(key) => {
                    file_value(table, key, $parse)?.unwrap_or(cli.$field)
                }
                _ => cli.$field,
            }
        }};
    }
    let string = |s: &str| Ok::<String, String>(s.to_owned());
    let tcp_address = pick!(tcp_address, string);
    let http_address = pick!(http_address, string);
    let broadcast_address: Option<String> = match file {
        Some(table) if !from_flag("broadcast_address") => {
            file_value(table, "broadcast_address", |s| Ok(Some(s.to_owned())))?
                .unwrap_or(cli.broadcast_address)
        }
        _ => cli.broadcast_address,
    };
    let allow = |s: &str| parse_allow(s).map(Some);
    let tcp_allow: Option<AllowList> = pick!(tcp_allow, allow);
    let inactive_producer_timeout = pick!(inactive_producer_timeout, parse_duration);
    let tombstone_lifetime = pick!(tombstone_lifetime, parse_duration);
    let max_command_size = pick!(max_command_size, parse_size);
    let max_identify_body_size = pick!(max_identify_body_size, parse_size);
    let max_registrations_per_connection = pick!(max_registrations_per_connection, parse_size);
    let tcp_idle_timeout = pick!(tcp_idle_timeout, parse_duration);
    let max_tcp_connections = pick!(max_tcp_connections, parse_size);
    let max_http_connections = pick!(max_http_connections, parse_size);
    let max_http_accept_rate = pick!(max_http_accept_rate, parse_rate);
    let http_header_timeout = pick!(http_header_timeout, parse_duration);
    let http_max_header_size = pick!(http_max_header_size, parse_header_size);
    let http_max_body_size = pick!(http_max_body_size, parse_size);
    let log_level = pick!(log_level, parse_log_level);
    let log_prefix = pick!(log_prefix, string);
    let log_format = pick!(log_format, parse_log_format);
    let lookup_cache_size = pick!(lookup_cache_size, parse_size);
    let caps = Caps {
        max_registrations: pick!(max_registrations, parse_size) as u64,
        max_keys: pick!(max_keys, parse_size) as u64,
    };
    let compression = Compression {
        gzip_level: pick!(http_compression, parse_bool)
            .then_some(pick!(http_gzip_level, parse_gzip_level)),
        min_size: pick!(http_compression_min_size, parse_size),
    };
    let _verbose: bool = pick!(verbose, parse_bool);
    let path = |s: &str| parse_path(s).map(Some);
    let etcd = etcd::resolve(
        etcd::Given {
            endpoints: pick!(etcd_endpoints, |s| etcd::parse_endpoints(s).map(Some))
                .unwrap_or_default()
                .0,
            prefix: pick!(etcd_prefix, etcd::parse_prefix),
            lease_ttl: pick!(etcd_lease_ttl, etcd::parse_lease_ttl),
            max_txn_ops: pick!(etcd_max_txn_ops, etcd::parse_max_txn_ops),
            username: pick!(etcd_username, |s| Ok::<_, String>(Some(s.to_owned()))),
            password_file: pick!(etcd_password_file, path),
            cacert: pick!(etcd_cacert, path),
            cert: pick!(etcd_cert, path),
            key: pick!(etcd_key, path),
        },
        |id| match file {
            Some(table) if !from_flag(id) && table.contains_key(id) => etcd::Source::File,
            _ => etcd::Source::Flag,
        },
        warnings,
    )?;
    let mut access = access::resolve(
        access::Given {
            read_allow: pick!(read_allow, allow),
            admin_allow: pick!(admin_allow, allow),
            metrics_allow: pick!(metrics_allow, allow),
            admin_token_file: pick!(admin_token_file, path),
            admin_cn: pick!(admin_cn, |s| access::parse_common_names(s).map(Some)),
            auth_addresses: pick!(auth_http_address, |s| Ok::<_, String>(vec![s.to_owned()])),
            auth_method: pick!(auth_http_request_method, access::parse_method),
            connect_timeout: pick!(http_client_connect_timeout, parse_duration),
            request_timeout: pick!(http_client_request_timeout, parse_duration),
            cache_size: pick!(auth_cache_size, parse_size),
            denied_ttl: pick!(auth_denied_ttl, parse_duration),
            max_inflight: pick!(auth_max_inflight, parse_size),
        },
        warnings,
    )?;
    let tls = tls::resolve(cli.tls, matches, file, &http_address, warnings)?;
    // As nsqd: --tls-root-ca-file also verifies https auth servers.
    if let (Some(auth), Some(tls)) = (&mut access.auth, &tls) {
        auth.tls_root_ca_file.clone_from(&tls.root_ca_file);
    }
    Ok(Options {
        tcp_address,
        http_address,
        broadcast_address: broadcast_address
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned()),
        inactive_producer_timeout,
        tombstone_lifetime,
        log_level,
        log_prefix,
        log_format,
        lookup_cache_size,
        caps,
        tcp_allow,
        tcp_limits: TcpLimits {
            max_command_size,
            max_identify_body_size,
            max_registrations_per_connection,
            idle_timeout: (!tcp_idle_timeout.is_zero()).then_some(tcp_idle_timeout),
            max_connections: max_tcp_connections,
        },
        http_limits: HttpLimits {
            max_connections: max_http_connections,
            max_accept_rate: max_http_accept_rate,
            header_timeout: http_header_timeout,
            max_header_size: http_max_header_size,
            max_body_size: http_max_body_size,
        },
        etcd,
        access,
        compression,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(args: &[&str]) -> Options {
        let mut argv = vec!["nsqlookupd"];
        argv.extend_from_slice(args);
        match parse_args(argv).unwrap() {
            Parsed::Run { options, .. } => *options,
            other => panic!("{other:?}"),
        }
    }

    fn error(args: &[&str]) -> String {
        let mut argv = vec!["nsqlookupd"];
        argv.extend_from_slice(args);
        parse_args(argv).unwrap_err().0
    }

    #[test]
    fn defaults() {
        let o = options(&[]);
        assert_eq!(o.tcp_address, "0.0.0.0:4160");
        assert_eq!(o.http_address, "0.0.0.0:4161");
        assert_eq!(o.inactive_producer_timeout, Duration::from_secs(300));
        assert_eq!(o.tombstone_lifetime, Duration::from_secs(45));
        assert_eq!(o.log_level, LogLevel::Info);
        assert_eq!(o.log_prefix, "[nsqlookupd] ");
        assert_eq!(o.tcp_limits, TcpLimits::default());
        assert_eq!(o.http_limits, HttpLimits::default());
        assert_eq!(
            options(&["--tcp-idle-timeout=0"]).tcp_limits.idle_timeout,
            None
        );
        assert!(!o.broadcast_address.is_empty());
        assert_eq!(o.etcd, None, "standalone by default");
        assert_eq!(Options::default().etcd, None);
    }

    #[test]
    fn auth_addresses_repeat_and_split_on_commas() {
        let o = options(&[
            "--auth-http-address=a:1,b:2",
            "--auth-http-address",
            "http://c:3/auth",
        ]);
        let auth = o.access.auth.expect("auth on");
        assert_eq!(auth.addresses, ["a:1", "b:2", "http://c:3/auth"]);
        assert_eq!(auth.request_timeout, Duration::from_secs(5));
        assert_eq!(options(&[]).access, AccessOptions::default());
    }

    #[test]
    fn go_flag_syntax() {
        for args in [
            &["-tcp-address=127.0.0.1:1", "-tombstone-lifetime", "1s"][..],
            &["--tcp-address", "127.0.0.1:1", "--tombstone-lifetime=1s"],
            &["-tcp-address", "127.0.0.1:1", "--tombstone-lifetime", "1s"],
        ] {
            let o = options(args);
            assert_eq!(o.tcp_address, "127.0.0.1:1", "{args:?}");
            assert_eq!(o.tombstone_lifetime, Duration::from_secs(1));
        }
        assert_eq!(options(&["--log-prefix", "-x-"]).log_prefix, "-x-");
        assert_eq!(
            options(&["--log-level=info", "-log-level=debug"]).log_level,
            LogLevel::Debug,
            "a repeated flag: the last value wins, as with Go's flag package"
        );
        assert_eq!(options(&["-log-level=DEBUG"]).log_level, LogLevel::Debug);
        options(&["-verbose"]);
        options(&["--verbose=false"]);
    }

    #[test]
    fn version_and_help() {
        assert!(
            matches!(parse_args(["n", "--version"]), Ok(Parsed::Version(v)) if v.starts_with("nsqlookupd v1.3.0 ("))
        );
        assert!(matches!(
            parse_args(["n", "-version"]),
            Ok(Parsed::Version(_))
        ));
        match parse_args(["n", "--help"]).unwrap() {
            Parsed::Help(h) => {
                for needle in [
                    "Listeners",
                    "Registry timings",
                    "Limits",
                    "Logging",
                    "Cluster (etcd)",
                    "--etcd-endpoints",
                    "[default: /nsqlookupd]",
                    "[default: 0.0.0.0:4160]",
                    "[default: 5m0s]",
                ] {
                    assert!(h.contains(needle), "help lacks {needle:?}:\n{h}");
                }
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_args(["n", "-help"]), Ok(Parsed::Help(_))));
    }

    #[test]
    fn errors_are_one_line_and_name_the_flag() {
        let e = error(&["--bogus"]);
        assert_eq!(e, "flag provided but not defined: --bogus");
        let e = error(&["-tombstone-lifetime=abc"]);
        assert!(
            e.contains("--tombstone-lifetime") && e.contains("abc"),
            "{e}"
        );
        let e = error(&["--log-level", "loud"]);
        assert!(e.contains("--log-level") && e.contains("loud"), "{e}");
        let e = error(&["--max-command-size=0"]);
        assert!(e.contains("--max-command-size"), "{e}");
        let e = error(&["--http-max-header-size=100"]);
        assert!(
            e.contains("--http-max-header-size") && e.contains("8192"),
            "{e}"
        );
        let e = error(&["--tcp-address"]);
        assert_eq!(e, "flag needs an argument: --tcp-address");
        let e = error(&["stray"]);
        assert_eq!(
            e,
            "unexpected argument \"stray\": nsqlookupd takes only flags"
        );
        for e in [
            error(&["--bogus"]),
            error(&["--inactive-producer-timeout=5"]),
            error(&["x"]),
        ] {
            assert!(!e.contains('\n'), "{e:?}");
        }
    }

    fn with_file(contents: &str, args: &[&str]) -> Result<Parsed, ConfigError> {
        let dir = std::env::temp_dir().join(format!(
            "nsqlookupd-config-{}-{}",
            std::process::id(),
            contents.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, contents).unwrap();
        let mut argv = vec![
            "nsqlookupd".to_owned(),
            format!("--config={}", path.display()),
        ];
        argv.extend(args.iter().map(|s| s.to_string()));
        let r = parse_args(argv);
        std::fs::remove_dir_all(&dir).unwrap();
        r
    }

    /// The example config in `contrib/` covers every option, at its default.
    #[test]
    fn example_config_is_complete_and_equals_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/nsqlookupd.toml");
        let text = std::fs::read_to_string(path).unwrap();
        for arg in Cli::command().get_arguments() {
            let key = arg.get_id().as_str();
            if matches!(key, "config" | "version") {
                continue;
            }
            assert!(
                text.contains(&format!("\n{key} = ")) || text.contains(&format!("\n# {key} = ")),
                "contrib/nsqlookupd.toml lacks {key}"
            );
        }
        match parse_args(["nsqlookupd".to_owned(), format!("--config={path}")]).unwrap() {
            Parsed::Run { options, warnings } => {
                assert!(warnings.is_empty(), "{warnings:?}");
                assert_eq!(*options, Options::default());
            }
            other => panic!("{other:?}"),
        }
    }

    /// A directory for one test's files, removed on drop.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(test: &str) -> Scratch {
            let dir = std::env::temp_dir()
                .join(format!("nsqlookupd-config-{}-{test}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn file(&self, name: &str, contents: &str) -> String {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path.display().to_string()
        }

        fn missing(&self, name: &str) -> String {
            self.0.join(name).display().to_string()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn run(argv: &[String]) -> Result<(Options, Vec<String>), ConfigError> {
        let mut full = vec!["nsqlookupd".to_owned()];
        full.extend_from_slice(argv);
        match parse_args(full)? {
            Parsed::Run { options, warnings } => Ok((*options, warnings)),
            other => panic!("{other:?}"),
        }
    }

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn etcd_defaults_match_the_constants() {
        let cli = Cli::try_parse_from(["nsqlookupd"]).unwrap();
        assert_eq!(cli.etcd_prefix, etcd::DEFAULT_PREFIX);
        assert_eq!(cli.etcd_lease_ttl, etcd::DEFAULT_LEASE_TTL);
        assert_eq!(cli.etcd_max_txn_ops, etcd::DEFAULT_MAX_TXN_OPS);
        assert!(cli.etcd_endpoints.is_none());
    }

    #[test]
    fn etcd_cluster_mode_from_flags() {
        let o = options(&["--etcd-endpoints=http://127.0.0.1:2379"]);
        assert_eq!(
            o.etcd,
            Some(EtcdOptions {
                endpoints: vec!["http://127.0.0.1:2379".into()],
                prefix: "/nsqlookupd".into(),
                lease_ttl: Duration::from_secs(60),
                max_txn_ops: 128,
                username: None,
                password: None,
                ca_file: None,
                cert_file: None,
                key_file: None,
            })
        );
        assert!(!o.etcd.unwrap().uses_tls());

        let dir = Scratch::new("etcd-flags");
        let password = dir.file("pw", "s3cret\n");
        let ca = dir.file("ca.pem", "ca");
        let cert = dir.file("c.pem", "cert");
        let key = dir.file("k.pem", "key");
        let (o, warnings) = run(&[
            "-etcd-endpoints".into(),
            "https://etcd-1:2379, https://etcd-2:2379/".into(),
            "--etcd-prefix=prod/lookupd/".into(),
            "--etcd-lease-ttl".into(),
            "90s".into(),
            "--etcd-max-txn-ops=64".into(),
            "--etcd-username=nsq".into(),
            format!("--etcd-password-file={password}"),
            format!("--etcd-cacert={ca}"),
            format!("--etcd-cert={cert}"),
            format!("--etcd-key={key}"),
        ])
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let e = o.etcd.unwrap();
        assert_eq!(e.endpoints, ["https://etcd-1:2379", "https://etcd-2:2379"]);
        assert_eq!(e.prefix, "/prod/lookupd");
        assert_eq!(e.lease_ttl, Duration::from_secs(90));
        assert_eq!(e.max_txn_ops, 64);
        assert_eq!(e.username.as_deref(), Some("nsq"));
        assert_eq!(e.password.as_deref(), Some("s3cret"), "newline stripped");
        assert_eq!(e.ca_file, Some(PathBuf::from(&ca)));
        assert_eq!(e.cert_file, Some(PathBuf::from(&cert)));
        assert_eq!(e.key_file, Some(PathBuf::from(&key)));
        assert!(e.uses_tls());

        // A CRLF is stripped too; only one line end goes.
        let crlf = dir.file("pw2", "a b\n\r\n");
        let (o, _) = run(&[
            "--etcd-endpoints=http://a:1".into(),
            "--etcd-username=u".into(),
            format!("--etcd-password-file={crlf}"),
        ])
        .unwrap();
        assert_eq!(o.etcd.unwrap().password.as_deref(), Some("a b\n"));

        // A CA alone turns TLS on for http endpoints, and allows a client cert.
        let (o, _) = run(&[
            "--etcd-endpoints=http://a:1".into(),
            format!("--etcd-cacert={ca}"),
            format!("--etcd-cert={cert}"),
            format!("--etcd-key={key}"),
        ])
        .unwrap();
        assert!(o.etcd.unwrap().uses_tls());
    }

    #[test]
    fn etcd_empty_values_mean_not_given() {
        let o = options(&[
            "--etcd-endpoints=",
            "--etcd-username=",
            "--etcd-password-file=",
            "--etcd-cacert=",
            "--etcd-cert=",
            "--etcd-key=",
        ]);
        assert_eq!(o.etcd, None);
        let o = options(&["--etcd-endpoints=http://a:1", "--etcd-cert=", "--etcd-key="]);
        assert_eq!(o.etcd.unwrap().cert_file, None);
    }

    #[test]
    fn etcd_options_without_endpoints_are_ignored_with_a_warning() {
        let (o, warnings) = run(&strings(&["--etcd-prefix=/x", "--etcd-max-txn-ops=5"])).unwrap();
        assert_eq!(o.etcd, None);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("--etcd-prefix") && warnings[0].contains("--etcd-max-txn-ops"),
            "{warnings:?}"
        );
        // Values at their defaults are not worth a warning.
        let (_, warnings) = run(&strings(&["--etcd-prefix=/nsqlookupd/"])).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        // Bad values are errors in standalone mode too.
        assert!(error(&["--etcd-lease-ttl=1s"]).contains("--etcd-lease-ttl"));
    }

    #[test]
    fn etcd_bad_values_name_the_flag() {
        for (args, needles) in [
            (
                &["--etcd-endpoints=127.0.0.1:2379"][..],
                &["--etcd-endpoints", "127.0.0.1:2379", "scheme"][..],
            ),
            (
                &["--etcd-endpoints=http://a"],
                &["--etcd-endpoints", "port"],
            ),
            (
                &["--etcd-endpoints=http://a:1,https://b:2"],
                &["--etcd-endpoints", "mixes"],
            ),
            (&["--etcd-prefix=/"], &["--etcd-prefix"]),
            (
                &["--etcd-prefix=/a b"],
                &["--etcd-prefix", "printable ASCII"],
            ),
            (
                &["--etcd-lease-ttl=4s"],
                &["--etcd-lease-ttl", "at least 5s"],
            ),
            (
                &["--etcd-lease-ttl=5500ms"],
                &["--etcd-lease-ttl", "whole seconds"],
            ),
            (&["--etcd-lease-ttl=soon"], &["--etcd-lease-ttl", "soon"]),
            (
                &["--etcd-max-txn-ops=0"],
                &["--etcd-max-txn-ops", "at least 1"],
            ),
            (&["--etcd-max-txn-ops=x"], &["--etcd-max-txn-ops"]),
            (
                &["--etcd-prefix"],
                &["flag needs an argument: --etcd-prefix"],
            ),
        ] {
            let e = error(args);
            assert!(!e.contains('\n'), "{e:?}");
            for needle in needles {
                assert!(e.contains(needle), "{args:?}: {e:?} lacks {needle:?}");
            }
        }
    }

    #[test]
    fn etcd_checks_across_flags_and_files() {
        let dir = Scratch::new("etcd-checks");
        let pw = dir.file("pw", "p\n");
        let empty = dir.file("empty", "\n");
        let cert = dir.file("c.pem", "c");
        let gone = dir.missing("gone.pem");
        let ep = "--etcd-endpoints=http://a:1".to_owned();
        for (args, want) in [
            (
                vec![ep.clone(), format!("--etcd-cert={cert}")],
                "flag --etcd-cert needs --etcd-key",
            ),
            (
                vec![ep.clone(), format!("--etcd-key={cert}")],
                "flag --etcd-key needs --etcd-cert",
            ),
            (
                vec![ep.clone(), "--etcd-username=u".into()],
                "flag --etcd-username needs --etcd-password-file",
            ),
            (
                vec![ep.clone(), format!("--etcd-password-file={pw}")],
                "flag --etcd-password-file needs --etcd-username",
            ),
            (
                vec![
                    ep.clone(),
                    format!("--etcd-cert={cert}"),
                    format!("--etcd-key={cert}"),
                ],
                "flag --etcd-cert needs https:// endpoints or --etcd-cacert",
            ),
            (
                vec![ep.clone(), format!("--etcd-cacert={gone}")],
                "for flag --etcd-cacert: cannot read the file",
            ),
            (
                vec![
                    ep.clone(),
                    format!("--etcd-cert={gone}"),
                    format!("--etcd-key={cert}"),
                ],
                "for flag --etcd-cert: cannot read the file",
            ),
            (
                vec![
                    ep.clone(),
                    format!("--etcd-cert={cert}"),
                    format!("--etcd-key={gone}"),
                ],
                "for flag --etcd-key: cannot read the file",
            ),
            (
                vec![
                    ep.clone(),
                    "--etcd-username=u".into(),
                    format!("--etcd-password-file={gone}"),
                ],
                "for flag --etcd-password-file: cannot read the file",
            ),
            (
                vec![
                    ep.clone(),
                    "--etcd-username=u".into(),
                    format!("--etcd-password-file={empty}"),
                ],
                "for flag --etcd-password-file: the file holds no password",
            ),
            // A directory is not a readable file.
            (
                vec![ep.clone(), format!("--etcd-cacert={}", dir.0.display())],
                "for flag --etcd-cacert: cannot read the file",
            ),
        ] {
            let e = run(&args).unwrap_err().0;
            assert!(e.contains(want), "{args:?}: {e:?}");
            assert!(!e.contains('\n'), "{e:?}");
        }
    }

    #[test]
    fn etcd_config_file_keys() {
        let dir = Scratch::new("etcd-file");
        let pw = dir.file("pw", "from-file");
        let cert = dir.file("c.pem", "c");
        let toml = format!(
            "etcd_endpoints = [\"http://e1:2379\", \"http://e2:2379\"]\n\
             etcd_prefix = \"cluster-a\"\n\
             etcd_lease_ttl = 30000\n\
             etcd_max_txn_ops = 16\n\
             etcd_username = \"nsq\"\n\
             etcd_password_file = {pw:?}\n"
        );
        let config = dir.file("a.toml", &toml);
        let (o, warnings) = run(&[format!("--config={config}")]).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let e = o.etcd.unwrap();
        assert_eq!(e.endpoints, ["http://e1:2379", "http://e2:2379"]);
        assert_eq!(e.prefix, "/cluster-a");
        assert_eq!(
            e.lease_ttl,
            Duration::from_secs(30),
            "a bare integer is milliseconds"
        );
        assert_eq!(e.max_txn_ops, 16);
        assert_eq!(e.password.as_deref(), Some("from-file"));

        // The string form; the command line wins over the file.
        let config = dir.file(
            "b.toml",
            "etcd_endpoints = \"http://e1:2379,http://e2:2379\"\netcd_prefix = \"/f\"\n",
        );
        let (o, _) = run(&[format!("--config={config}"), "--etcd-prefix=/cli".into()]).unwrap();
        let e = o.etcd.unwrap();
        assert_eq!(e.endpoints, ["http://e1:2379", "http://e2:2379"]);
        assert_eq!(e.prefix, "/cli");
        let config = dir.file("c.toml", "etcd_endpoints = []\n");
        assert_eq!(run(&[format!("--config={config}")]).unwrap().0.etcd, None);

        // Bad values and checks name the key.
        for (contents, want) in [
            (
                "etcd_endpoints = \"ftp://x:1\"\n",
                "config option etcd_endpoints",
            ),
            (
                "etcd_endpoints = [\"http://x:1\", 2]\n",
                "config option etcd_endpoints",
            ),
            ("etcd_endpoints = 7\n", "config option etcd_endpoints"),
            ("etcd_prefix = \"/\"\n", "config option etcd_prefix"),
            ("etcd_lease_ttl = \"1s\"\n", "config option etcd_lease_ttl"),
            ("etcd_lease_ttl = 60\n", "config option etcd_lease_ttl"),
            ("etcd_max_txn_ops = 0\n", "config option etcd_max_txn_ops"),
            (
                "etcd_username = \"u\"\n",
                "config option etcd_username needs etcd_password_file",
            ),
            (
                "etcd_endpoints = \"http://x:1\"\netcd_cacert = \"/nonexistent/ca.pem\"\n",
                "for config option etcd_cacert: cannot read the file",
            ),
        ] {
            let config = dir.file("bad.toml", contents);
            let e = run(&[format!("--config={config}")]).unwrap_err().0;
            assert!(e.contains(want), "{contents:?}: {e:?}");
        }
        // A cert from the file, its key missing: named in the file's terms.
        let config = dir.file("d.toml", &format!("etcd_cert = {cert:?}\n"));
        let e = run(&[format!("--config={config}")]).unwrap_err().0;
        assert_eq!(e, "config option etcd_cert needs etcd_key");
    }

    #[test]
    fn config_file_and_precedence() {
        let file = "tcp_address = \"127.0.0.1:7\"\ninactive_producer_timeout = \"1m\"\ntombstone_lifetime = 1500\nlog_level = \"warn\"\nbogus_key = 1\n";
        match with_file(file, &["--tcp-address=127.0.0.1:8"]).unwrap() {
            Parsed::Run { options, warnings } => {
                assert_eq!(options.tcp_address, "127.0.0.1:8", "flag wins");
                assert_eq!(options.inactive_producer_timeout, Duration::from_secs(60));
                assert_eq!(options.tombstone_lifetime, Duration::from_millis(1500));
                assert_eq!(options.log_level, LogLevel::Warn);
                assert_eq!(options.http_address, "0.0.0.0:4161", "default stays");
                assert_eq!(warnings.len(), 1);
                assert!(warnings[0].contains("bogus_key"));
            }
            other => panic!("{other:?}"),
        }
        let e = with_file("tombstone_lifetime = \"forever\"\n", &[]).unwrap_err();
        assert!(e.0.contains("tombstone_lifetime"), "{e}");
        let e = with_file("not toml [", &[]).unwrap_err();
        assert!(e.0.starts_with("failed to load config file"), "{e}");
    }
}
