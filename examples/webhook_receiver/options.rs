//! The command line of the webhook receiver example.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::signature::{Ed25519Signer, Ed25519Verifier, GithubSecret};

pub(crate) const USAGE: &str = "\
usage: cargo run --example webhook_receiver --features http -- [--demo | --send URL] [OPTIONS]

modes:
  (none)                 run the receiver until Ctrl-C
  --demo                 start a receiver on a free loopback port, send the demo deliveries to it, print what
                         happened and check that each event was processed once; exits 0 when every check passes
  --send URL             send the demo deliveries to a running receiver, such as http://127.0.0.1:3000

receiver:
  --listen ADDR          loopback address and port to bind (default 127.0.0.1:3000)
  --db PATH              SQLite file of the idem store, created when missing
                         (default webhook-receiver.sqlite3; with --demo a temporary file)
  --redis-url URL        keep the records on Redis instead, such as redis://127.0.0.1:6379/0
                         (needs --features http,redis)
  --work-ms MS           simulated processing time of one event, in milliseconds (default 200)

keys (a flag, else the environment variable, else a fake demo value that is not secret):
  --github-secret S          WEBHOOK_GITHUB_SECRET       shared secret of the GitHub scheme
  --ed25519-public-key HEX   WEBHOOK_ED25519_PUBLIC_KEY  receiver: the sender's public key, 64 hex digits
                                                         (default: the key of the seed below)
  --ed25519-seed HEX         WEBHOOK_ED25519_SEED        sender: the private key seed, 64 hex digits

  -h, --help             print this help";

/// The fake GitHub secret used when none is configured.
pub(crate) const DEMO_GITHUB_SECRET: &str = "idem-demo-secret-not-for-production";
/// The fake Ed25519 seed used when none is configured: 32 ASCII bytes that say what they are.
pub(crate) const DEMO_ED25519_SEED: &[u8; 32] = b"idem-demo-ed25519-seed-not-real!";

/// The mode the example runs in.
#[derive(Debug)]
pub(crate) enum Mode {
    Receive,
    Send(String),
    Demo,
}

/// The parsed command line; keys are already resolved from flags, environment or demo defaults.
#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) mode: Mode,
    pub(crate) listen: SocketAddr,
    pub(crate) db: Option<PathBuf>,
    pub(crate) redis_url: Option<String>,
    pub(crate) work_ms: u64,
    pub(crate) github_secret: GithubSecret,
    pub(crate) ed25519_verifier: Ed25519Verifier,
    pub(crate) ed25519_signer: Ed25519Signer,
    /// Names of the keys that fell back to a demo value, for a warning.
    pub(crate) demo_keys: Vec<&'static str>,
}

impl Options {
    /// Parses the arguments; `None` means help was requested.
    pub(crate) fn parse(
        arguments: impl Iterator<Item = OsString>,
        environment: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, String> {
        let mut mode = Mode::Receive;
        let mut listen = None;
        let mut db = None;
        let mut redis_url = None;
        let mut work_ms = 200;
        let mut github_secret = None;
        let mut public_key = None;
        let mut seed = None;

        let mut arguments = arguments;
        while let Some(argument) = arguments.next() {
            let Some(flag) = argument.to_str() else {
                return Err(format!("unknown argument {argument:?}"));
            };
            let mut value = |example: &str| -> Result<String, String> {
                let value = arguments
                    .next()
                    .ok_or_else(|| format!("{flag} needs a value, such as {flag} {example}"))?;
                value
                    .into_string()
                    .map_err(|value| format!("{flag} {value:?} is not valid UTF-8"))
            };
            match flag {
                "--demo" => mode = Mode::Demo,
                "--send" => mode = Mode::Send(value("http://127.0.0.1:3000")?),
                "--listen" => {
                    let text = value("127.0.0.1:3000")?;
                    let address: SocketAddr = text.parse().map_err(|error| {
                        format!("--listen {text:?} is not an address and port ({error}); pass one such as 127.0.0.1:3000")
                    })?;
                    listen = Some(address);
                }
                "--db" => db = Some(PathBuf::from(value("/tmp/webhooks.sqlite3")?)),
                "--redis-url" => redis_url = Some(value("redis://127.0.0.1:6379/0")?),
                "--work-ms" => {
                    let text = value("300")?;
                    work_ms = text.parse().map_err(|_| {
                        format!(
                            "--work-ms {text:?} is not a whole number of milliseconds; pass one such as 300"
                        )
                    })?;
                }
                "--github-secret" => github_secret = Some(value("my-webhook-secret")?),
                "--ed25519-public-key" => public_key = Some(value("<64 hex digits>")?),
                "--ed25519-seed" => seed = Some(value("<64 hex digits>")?),
                "-h" | "--help" => return Ok(None),
                _ => return Err(format!("unknown argument {flag:?}")),
            }
        }

        if let Some(address) = listen {
            if !address.ip().is_loopback() {
                return Err(format!(
                    "--listen {address} is not a loopback address; this example binds only 127.0.0.1 or ::1"
                ));
            }
        }
        if db.is_some() && redis_url.is_some() {
            return Err("--db and --redis-url exclude each other; pick one store".to_owned());
        }
        match &mode {
            Mode::Send(_) if listen.is_some() || db.is_some() || redis_url.is_some() => {
                return Err(
                    "--send only sends; --listen, --db and --redis-url configure a receiver".to_owned(),
                );
            }
            Mode::Demo if listen.is_some() => {
                return Err("--demo binds a free loopback port itself; drop --listen".to_owned());
            }
            _ => {}
        }

        let mut demo_keys = Vec::new();
        let mut resolve = |flag: Option<String>, variable: &'static str| {
            let value = flag.or_else(|| environment(variable));
            if value.is_none() {
                demo_keys.push(variable);
            }
            value
        };
        let github_secret = resolve(github_secret, "WEBHOOK_GITHUB_SECRET");
        let seed = resolve(seed, "WEBHOOK_ED25519_SEED");
        let public_key = public_key.or_else(|| environment("WEBHOOK_ED25519_PUBLIC_KEY"));

        let github_secret =
            GithubSecret::new(github_secret.unwrap_or_else(|| DEMO_GITHUB_SECRET.to_owned()))?;
        let ed25519_signer =
            Ed25519Signer::from_hex(&seed.unwrap_or_else(|| hex::encode(DEMO_ED25519_SEED)))?;
        let ed25519_verifier = match public_key {
            Some(public_key) => Ed25519Verifier::from_hex(&public_key)?,
            // Without a public key the receiver accepts the configured (or demo) seed's signatures.
            None => ed25519_signer.verifier(),
        };

        Ok(Some(Options {
            mode,
            listen: listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 3000))),
            db,
            redis_url,
            work_ms,
            github_secret,
            ed25519_verifier,
            ed25519_signer,
            demo_keys,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(arguments: &[&str]) -> Result<Option<Options>, String> {
        Options::parse(arguments.iter().map(OsString::from), |_| None)
    }

    #[test]
    fn options_defaults() {
        let options = parse(&[]).unwrap().unwrap();
        assert!(matches!(options.mode, Mode::Receive));
        assert_eq!(options.listen, SocketAddr::from(([127, 0, 0, 1], 3000)));
        assert_eq!(
            options.demo_keys,
            ["WEBHOOK_GITHUB_SECRET", "WEBHOOK_ED25519_SEED"]
        );
        assert_eq!(
            options.ed25519_verifier.to_hex(),
            options.ed25519_signer.verifier().to_hex()
        );
    }

    #[test]
    fn options_reject_bad_input() {
        for arguments in [
            &["--listen", "0.0.0.0:3000"][..],
            &["--listen", "localhost"],
            &["--db", "a", "--redis-url", "redis://127.0.0.1"],
            &["--send", "http://127.0.0.1:3000", "--db", "a"],
            &["--demo", "--listen", "127.0.0.1:1"],
            &["--work-ms", "soon"],
            &["--github-secret", ""],
            &["--ed25519-public-key", "abcd"],
            &["--db"],
            &["--verbose"],
        ] {
            assert!(parse(arguments).is_err(), "{arguments:?} was accepted");
        }
    }

    #[test]
    fn options_read_environment() {
        let seed = "07".repeat(32);
        let environment = |name: &str| (name == "WEBHOOK_ED25519_SEED").then(|| seed.clone());
        let options = Options::parse(std::iter::empty(), environment).unwrap().unwrap();
        let expected = Ed25519Signer::from_hex(&seed).unwrap().verifier().to_hex();
        assert_eq!(options.ed25519_signer.verifier().to_hex(), expected);
        assert_eq!(options.demo_keys, ["WEBHOOK_GITHUB_SECRET"]);
    }
}
